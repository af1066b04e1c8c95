package entra

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultIMDSEndpoint is the Azure Instance Metadata Service token endpoint
// used by a managed identity when no other is configured. It is plain http
// on a link-local address, reachable only from inside the VM.
const DefaultIMDSEndpoint = "http://169.254.169.254/metadata/identity/oauth2/token"

// API versions of the two managed identity protocols.
const (
	imdsAPIVersion       = "2018-02-01"
	appServiceAPIVersion = "2019-08-01"
)

// Environment variables that App Service, Azure Functions and Container
// Apps set for their managed identity endpoint.
const (
	EnvIdentityEndpoint = "IDENTITY_ENDPOINT"
	EnvIdentityHeader   = "IDENTITY_HEADER"
)

// ErrManagedIdentityScope means a managed identity token was asked for with
// other than exactly one scope: the managed identity protocols take one
// resource.
var ErrManagedIdentityScope = errors.New("entra: a managed identity token takes exactly one scope")

// ManagedIdentityCredential gets tokens for the Azure managed identity of
// the host (Caddyfile managed_identity [<client_id>]).
//
// On a VM (and AKS node, Container Instances...) it asks IMDS:
//
//	GET {IMDSEndpoint}?api-version=2018-02-01&resource=<resource>[&client_id=<id>|&object_id=<id>|&msi_res_id=<id>]
//	Metadata: true
//
// On App Service, Functions and Container Apps (IdentityEndpoint and
// IdentityHeader set) it asks the platform's identity endpoint:
//
//	GET {IdentityEndpoint}?api-version=2019-08-01&resource=<resource>[&client_id=<id>|&principal_id=<id>|&mi_res_id=<id>]
//	X-IDENTITY-HEADER: <IdentityHeader>
//
// A user-assigned identity is selected by one of its client ID, object
// (principal) ID or Azure resource ID; with none, the host's
// system-assigned identity answers.
//
// The resource is the one scope asked for without its "/.default" suffix.
// No tenant, client secret or token endpoint is involved; plain http
// endpoints are accepted (IMDS is plain http).
type ManagedIdentityCredential struct {
	// ClientID selects a user-assigned identity by its client ID. Default:
	// Config.ClientID when set, else the system-assigned identity.
	ClientID string

	// ObjectID selects a user-assigned identity by its object (principal)
	// ID. At most one of ClientID (or Config.ClientID), ObjectID and
	// ResourceID is set. Default: none.
	ObjectID string

	// ResourceID selects a user-assigned identity by its Azure resource ID:
	// /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>.
	// Default: none.
	ResourceID string

	// IMDSEndpoint is the IMDS token endpoint. Default DefaultIMDSEndpoint.
	// Setting it (e.g. to an emulator in tests) selects IMDS even where
	// IDENTITY_ENDPOINT is set.
	IMDSEndpoint string

	// IdentityEndpoint and IdentityHeader select the App Service / Container
	// Apps protocol; they must be set together. When both they and
	// IMDSEndpoint are empty, NewClient takes them from the environment
	// variables IDENTITY_ENDPOINT and IDENTITY_HEADER, and uses IMDS unless
	// both are set. IdentityHeader is a secret: it never appears in an error.
	IdentityEndpoint string
	IdentityHeader   string
}

// managedIdentity is a validated ManagedIdentityCredential.
type managedIdentity struct {
	clientID       string
	selector       identitySelector // how a user-assigned identity is named; none for the system one
	selectorValue  string
	endpoint       string // without the query the client adds
	identityHeader string // "" for IMDS
}

// newManagedIdentity validates cfg.ManagedIdentity; failures are
// *ConfigError (field managed_identity).
func newManagedIdentity(cfg *Config) (*managedIdentity, error) {
	spec := *cfg.ManagedIdentity
	fail := func(reason string) (*managedIdentity, error) {
		return nil, &ConfigError{Field: "managed_identity", Reason: reason}
	}
	clientID := strings.TrimSpace(spec.ClientID)
	if configured := strings.TrimSpace(cfg.ClientID); configured != "" {
		if clientID != "" && clientID != configured {
			return fail("client_id and the managed identity's client ID differ; set one")
		}
		clientID = configured
	}
	selector, selectorValue := selectNone, ""
	for _, named := range []struct {
		selector identitySelector
		value    string
	}{{selectClientID, clientID}, {selectObjectID, strings.TrimSpace(spec.ObjectID)}, {selectResourceID, strings.TrimSpace(spec.ResourceID)}} {
		if named.value == "" {
			continue
		}
		if selector != selectNone {
			return fail(selector.field() + " and " + named.selector.field() + " both name a user-assigned identity; set one")
		}
		if hasControlOrSpace(named.value) {
			return fail(named.selector.field() + " must not contain spaces or control characters")
		}
		selector, selectorValue = named.selector, named.value
	}
	if selector == selectResourceID && !strings.HasPrefix(strings.ToLower(selectorValue), "/subscriptions/") {
		return fail("resource_id must be an Azure resource ID (/subscriptions/.../providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>)")
	}
	if len(cfg.ExtraParams) > 0 {
		return nil, &ConfigError{Field: "token_request_param", Reason: "is not supported with managed_identity"}
	}
	if len(cfg.ClientCapabilities) > 0 {
		return nil, &ConfigError{Field: "client_capabilities", Reason: "is not supported with managed_identity"}
	}

	identityEndpoint, identityHeader := spec.IdentityEndpoint, spec.IdentityHeader
	if identityEndpoint == "" && identityHeader == "" && spec.IMDSEndpoint == "" {
		identityEndpoint, identityHeader = os.Getenv(EnvIdentityEndpoint), os.Getenv(EnvIdentityHeader)
		if identityEndpoint == "" || identityHeader == "" {
			identityEndpoint, identityHeader = "", ""
		}
	}
	mi := &managedIdentity{clientID: clientID, selector: selector, selectorValue: selectorValue}
	switch {
	case identityEndpoint != "" || identityHeader != "":
		if spec.IMDSEndpoint != "" {
			return fail("imds_endpoint and identity_endpoint are both set; set one")
		}
		if identityEndpoint == "" || identityHeader == "" {
			return fail("identity_endpoint and identity_header must be set together")
		}
		if hasControlOrSpace(identityHeader) {
			return fail("identity_header must not contain spaces or control characters")
		}
		u, reason := parseEndpointURL(identityEndpoint, false)
		if reason != "" {
			return fail("identity_endpoint " + reason)
		}
		mi.endpoint, mi.identityHeader = u.String(), identityHeader
	default:
		endpoint := spec.IMDSEndpoint
		if endpoint == "" {
			endpoint = DefaultIMDSEndpoint
		}
		u, reason := parseEndpointURL(endpoint, false)
		if reason != "" {
			return fail("imds_endpoint " + reason)
		}
		mi.endpoint = u.String()
	}
	return mi, nil
}

// identitySelector is how a managed identity credential names its
// user-assigned identity.
type identitySelector int

const (
	selectNone identitySelector = iota // the system-assigned identity
	selectClientID
	selectObjectID
	selectResourceID
)

// field is the selector's configuration name.
func (s identitySelector) field() string {
	return [...]string{"", "client_id", "object_id", "resource_id"}[s]
}

// queryParameter is the selector's name in a request to IMDS, or to the
// App Service identity endpoint when appService.
func (s identitySelector) queryParameter(appService bool) string {
	if appService {
		return [...]string{"", "client_id", "principal_id", "mi_res_id"}[s]
	}
	return [...]string{"", "client_id", "object_id", "msi_res_id"}[s]
}

// newRequest asks the managed identity endpoint for a token for the
// resource of tr's scope, which must be one scope.
func (mi *managedIdentity) newRequest(ctx context.Context, tr tokenRequest) (*http.Request, []string, error) {
	scope := tr.scope
	if len(strings.Fields(scope)) != 1 {
		return nil, nil, &RequestError{Err: ErrManagedIdentityScope}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, mi.endpoint, nil)
	if err != nil {
		return nil, nil, &RequestError{Err: fmt.Errorf("building request: %w", err)}
	}
	query := req.URL.Query()
	query.Set("resource", strings.TrimSuffix(scope, "/.default"))
	if mi.selector != selectNone {
		query.Set(mi.selector.queryParameter(mi.identityHeader != ""), mi.selectorValue)
	}
	if mi.identityHeader != "" {
		query.Set("api-version", appServiceAPIVersion)
		req.Header.Set("X-IDENTITY-HEADER", mi.identityHeader)
	} else {
		query.Set("api-version", imdsAPIVersion)
		req.Header.Set("Metadata", "true")
	}
	req.URL.RawQuery = query.Encode()
	return req, []string{mi.identityHeader}, nil
}

func (*managedIdentity) parse(status int, header http.Header, body []byte, sentAt time.Time, r *redactor) (*Token, error) {
	return parseManagedIdentityResponse(status, header, body, sentAt, r)
}

func (*managedIdentity) kind() string { return "managed_identity" }

// fingerprint names the identity: by its object or resource ID when one of
// them selects it, else by its client ID ("" for the system-assigned one).
func (mi *managedIdentity) fingerprint() string {
	if mi.selector == selectObjectID || mi.selector == selectResourceID {
		return mi.selector.field() + "=" + mi.selectorValue
	}
	return mi.clientID
}

// cacheKeyLines are "managed_identity", then the object or resource ID that
// selects a user-assigned identity (a client ID has a line of its own).
func (mi *managedIdentity) cacheKeyLines() []string {
	if mi.selector == selectObjectID || mi.selector == selectResourceID {
		return []string{"managed_identity", mi.fingerprint()}
	}
	return []string{"managed_identity"}
}

// ParseManagedIdentityResponse turns a managed identity endpoint's answer
// (IMDS or App Service) into a Token or a *RequestError. sentAt is when the
// request was sent.
//
// A success needs a 2xx status and a JSON object with a usable access_token
// (as ParseTokenResponse) and a lifetime: expires_in (seconds, number or
// numeric string) is preferred, as it does not depend on the clocks
// agreeing; else expires_on, epoch seconds as a number or numeric string
// (or the date string of App Service's 2017 API, "09/14/2017 00:00:00 PM
// +00:00"), which must be in the future. token_type, when present, must be
// Bearer.
//
// Error answers carry IMDS's "error" and "error_description", or App
// Service's "message", in the *RequestError.
func ParseManagedIdentityResponse(status int, header http.Header, body []byte, sentAt time.Time) (*Token, error) {
	return parseManagedIdentityResponse(status, header, body, sentAt, nil)
}

// parseManagedIdentityResponse is ParseManagedIdentityResponse masking r's
// secrets in the error fields before they are cut to length.
func parseManagedIdentityResponse(status int, header http.Header, body []byte, sentAt time.Time, r *redactor) (*Token, error) {
	return parseAnswer(status, header, body, sentAt, r, expiresInOrOnLifetime)
}

// expiresInOrOnLifetime reads the lifetime of a managed identity's answer:
// its expires_in, preferred as it does not depend on the clocks agreeing,
// else its expires_on.
func expiresInOrOnLifetime(fields map[string]json.RawMessage, sentAt time.Time) (time.Duration, time.Time, string) {
	expiresIn, expiresAt, reason := expiresInLifetime(fields, sentAt)
	rawOn, hasOn := fields["expires_on"]
	switch _, hasIn := fields["expires_in"]; {
	case reason == "":
		return expiresIn, expiresAt, ""
	case !hasOn && !hasIn:
		return 0, time.Time{}, "expires_in and expires_on are missing"
	case !hasOn:
		return 0, time.Time{}, reason
	}
	on, err := parseExpiresOn(rawOn)
	if err != nil {
		return 0, time.Time{}, "expires_on " + err.Error()
	}
	expiresIn = on.Sub(sentAt).Truncate(time.Second)
	switch {
	case expiresIn <= 0:
		return 0, time.Time{}, "expires_on is not in the future"
	case expiresIn > maxLifetime:
		return 0, time.Time{}, "expires_on is out of range"
	}
	return expiresIn, on, ""
}

// expiresOnLayouts are the date formats of App Service's 2017-09-01 API,
// with and without the AM/PM marker (which Go applies to a 24-hour hour
// too: "00:00:00 PM" is noon).
var expiresOnLayouts = []string{"1/2/2006 15:04:05 PM -07:00", "1/2/2006 15:04:05 -07:00"}

// parseExpiresOn reads an expires_on: epoch seconds as a JSON number or
// numeric string, or an App Service 2017 date string.
func parseExpiresOn(raw json.RawMessage) (time.Time, error) {
	raw = bytes.TrimSpace(raw)
	text := string(raw)
	if len(raw) > 0 && raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			return time.Time{}, errors.New("is not a number or date")
		}
		text = strings.TrimSpace(text)
		if !isJSONNumber(text) {
			for _, layout := range expiresOnLayouts {
				if at, err := time.Parse(layout, text); err == nil {
					return at, nil
				}
			}
			return time.Time{}, errors.New("is not a number or date")
		}
	}
	if !isJSONNumber(text) {
		return time.Time{}, errors.New("is not a number or date")
	}
	secs, err := strconv.ParseFloat(text, 64)
	// Epoch seconds up to the year 9999 keep time arithmetic in range.
	if err != nil || math.IsNaN(secs) || secs <= 0 || secs > 253402300799 {
		return time.Time{}, errors.New("is out of range")
	}
	return time.Unix(int64(secs), 0), nil
}
