package entra

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// DefaultIMDSEndpoint is the Azure Instance Metadata Service token endpoint:
// plain http on a link-local address, reachable only from inside the VM.
const DefaultIMDSEndpoint = "http://169.254.169.254/metadata/identity/oauth2/token"

// API versions of the two managed identity protocols.
const (
	imdsAPIVersion       = "2018-02-01"
	appServiceAPIVersion = "2019-08-01"
)

// Environment variables of the managed identity endpoint of App Service,
// Azure Functions and Container Apps.
const (
	EnvIdentityEndpoint = "IDENTITY_ENDPOINT"
	EnvIdentityHeader   = "IDENTITY_HEADER"
)

// Variables by which MSAL and azidentity (MSAL Go's GetSource) recognise
// managed identity environments whose protocols this package does not
// speak: Service Fabric, Azure Machine Learning, Cloud Shell and Azure Arc.
const (
	envIdentityServerThumbprint = "IDENTITY_SERVER_THUMBPRINT"
	envIMDSEndpoint             = "IMDS_ENDPOINT"
	envMSIEndpoint              = "MSI_ENDPOINT"
	envMSISecret                = "MSI_SECRET"
)

// azureArcAgentPath is where the Azure Arc agent's himds is installed on
// this system, "" where MSAL looks for none.
var azureArcAgentPath = func() string {
	switch runtime.GOOS {
	case "linux":
		return "/opt/azcmagent/bin/himds"
	case "windows":
		if programData := os.Getenv("ProgramData"); programData != "" {
			return filepath.Join(programData, "AzureConnectedMachineAgent", "himds.exe")
		}
	}
	return ""
}

// ErrManagedIdentityScope means a managed identity token was asked for with
// other than exactly one scope.
var ErrManagedIdentityScope = errors.New("entra: a managed identity token takes exactly one scope")

// ManagedIdentityCredential gets tokens for the Azure managed identity of
// the host, from IMDS or App Service's identity endpoint, for the resource
// of the one scope. A user-assigned identity is selected by its client ID,
// object ID or resource ID; with none, the system-assigned one answers.
// With no endpoint set, an environment whose variables MSAL takes for
// Service Fabric, Azure Machine Learning, Cloud Shell or Azure Arc is
// refused: their protocols are not spoken, and IMDS there is absent or
// not theirs.
type ManagedIdentityCredential struct {
	// ClientID selects a user-assigned identity by its client ID. Default:
	// Config.ClientID.
	ClientID string

	// ObjectID selects a user-assigned identity by its object (principal)
	// ID. At most one of ClientID, ObjectID and ResourceID is set; none
	// selects the system-assigned identity. Default none.
	ObjectID string

	// ResourceID selects a user-assigned identity by its Azure resource ID
	// (/subscriptions/.../userAssignedIdentities/<name>). Default none.
	ResourceID string

	// IMDSEndpoint is the IMDS token endpoint. Default DefaultIMDSEndpoint;
	// setting it selects IMDS even where IDENTITY_ENDPOINT, or the
	// variables of a refused environment, are set.
	IMDSEndpoint string

	// IdentityEndpoint and IdentityHeader, set together, select the App
	// Service protocol. Default: IDENTITY_ENDPOINT and IDENTITY_HEADER when
	// both are set, IDENTITY_SERVER_THUMBPRINT is not (Service Fabric) and
	// IMDSEndpoint is not. IdentityHeader is a secret.
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

// newManagedIdentity validates cfg.ManagedIdentity.
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
	named := [...]string{selectClientID: clientID,
		selectObjectID: strings.TrimSpace(spec.ObjectID), selectResourceID: strings.TrimSpace(spec.ResourceID)}
	for s, value := range named {
		if value == "" {
			continue
		}
		if selector != selectNone {
			return fail(selector.field() + " and " + identitySelector(s).field() + " both name a user-assigned identity; set one")
		}
		if hasControlOrSpace(value) {
			return fail(identitySelector(s).field() + " must not contain spaces or control characters")
		}
		selector, selectorValue = identitySelector(s), value
	}
	switch {
	case selector == selectResourceID && !strings.HasPrefix(strings.ToLower(selectorValue), "/subscriptions/"):
		return fail("resource_id must be an Azure resource ID (/subscriptions/.../providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>)")
	case len(cfg.ExtraParams) > 0:
		return nil, &ConfigError{Field: "token_request_param", Reason: "is not supported with managed_identity"}
	case len(cfg.ClientCapabilities) > 0:
		return nil, &ConfigError{Field: "client_capabilities", Reason: "is not supported with managed_identity"}
	}

	identityEndpoint, identityHeader := spec.IdentityEndpoint, spec.IdentityHeader
	if identityEndpoint == "" && identityHeader == "" && spec.IMDSEndpoint == "" {
		if environment := unsupportedEnvironment(); environment != "" {
			return fail(environment + " is not supported; set the managed identity's endpoint, or use another credential")
		}
		identityEndpoint, identityHeader = os.Getenv(EnvIdentityEndpoint), os.Getenv(EnvIdentityHeader)
		if identityEndpoint == "" || identityHeader == "" {
			identityEndpoint, identityHeader = "", ""
		}
	}
	mi := &managedIdentity{clientID: clientID, selector: selector, selectorValue: selectorValue}
	endpoint, field := cmp.Or(spec.IMDSEndpoint, DefaultIMDSEndpoint), "imds_endpoint"
	if identityEndpoint != "" || identityHeader != "" {
		switch {
		case spec.IMDSEndpoint != "":
			return fail("imds_endpoint and identity_endpoint are both set; set one")
		case identityEndpoint == "" || identityHeader == "":
			return fail("identity_endpoint and identity_header must be set together")
		case hasControlOrSpace(identityHeader):
			return fail("identity_header must not contain spaces or control characters")
		}
		endpoint, field, mi.identityHeader = identityEndpoint, "identity_endpoint", identityHeader
	}
	u, reason := parseEndpointURL(endpoint, false)
	if reason != "" {
		return fail(field + " " + reason)
	}
	mi.endpoint = u.String()
	return mi, nil
}

// unsupportedEnvironment names the managed identity environment MSAL Go's
// GetSource finds in the variables (and, for Azure Arc, the agent's file),
// with what shows it, when this package does not speak its protocol; ""
// for App Service or IMDS. Values are never named: IDENTITY_HEADER and
// MSI_SECRET are secrets.
func unsupportedEnvironment() string {
	set := func(name string) bool { return os.Getenv(name) != "" }
	switch {
	case set(EnvIdentityEndpoint) && set(EnvIdentityHeader):
		if set(envIdentityServerThumbprint) {
			return "Service Fabric's managed identity (IDENTITY_ENDPOINT, IDENTITY_HEADER and IDENTITY_SERVER_THUMBPRINT are set)"
		}
		return ""
	case set(envMSIEndpoint) && set(envMSISecret):
		return "Azure Machine Learning's managed identity (MSI_ENDPOINT and MSI_SECRET are set)"
	case set(envMSIEndpoint):
		return "Cloud Shell's managed identity (MSI_ENDPOINT is set)"
	case set(EnvIdentityEndpoint) && set(envIMDSEndpoint):
		return "Azure Arc's managed identity (IDENTITY_ENDPOINT and IMDS_ENDPOINT are set)"
	}
	if agent := azureArcAgentPath(); agent != "" {
		if _, err := os.Stat(agent); err == nil {
			return "Azure Arc's managed identity (its agent " + agent + " is installed)"
		}
	}
	return ""
}

// identitySelector is how a user-assigned identity is named.
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

// queryParameter is the selector's name in a request to IMDS, or to App
// Service's endpoint.
func (s identitySelector) queryParameter(appService bool) string {
	if appService {
		return [...]string{"", "client_id", "principal_id", "mi_res_id"}[s]
	}
	return [...]string{"", "client_id", "object_id", "msi_res_id"}[s]
}

func (mi *managedIdentity) newRequest(ctx context.Context, tr tokenRequest) (*http.Request, []string, error) {
	if len(strings.Fields(tr.scope)) != 1 {
		return nil, nil, &RequestError{Err: ErrManagedIdentityScope}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, mi.endpoint, nil)
	if err != nil {
		return nil, nil, &RequestError{Err: fmt.Errorf("building request: %w", err)}
	}
	query := req.URL.Query()
	query.Set("resource", strings.TrimSuffix(tr.scope, "/.default"))
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
	return parseAnswer(status, header, body, sentAt, r, expiresInOrOnLifetime)
}

func (*managedIdentity) kind() string { return "managed_identity" }

// fingerprint names the identity: by the object or resource ID that selects
// it, else by its client ID ("" for the system-assigned one).
func (mi *managedIdentity) fingerprint() string {
	if mi.selector == selectObjectID || mi.selector == selectResourceID {
		return mi.selector.field() + "=" + mi.selectorValue
	}
	return mi.clientID
}

// cacheKeyLines: the client ID has a line of its own already.
func (mi *managedIdentity) cacheKeyLines() []string {
	if mi.selector == selectObjectID || mi.selector == selectResourceID {
		return []string{"managed_identity", mi.fingerprint()}
	}
	return []string{"managed_identity"}
}

// expiresInOrOnLifetime reads expires_in and expires_on; with both usable,
// the earlier end wins. IMDS, and proxies of it, answer a cached token with
// the expires_in of its original lifetime (azure-sdk-for-js #6643, which
// MSAL Go and azidentity for JS answer by preferring expires_on);
// expires_on is another clock's: the earlier is safe whichever is stale.
// An expires_on that does not parse is ignored when expires_in does.
func expiresInOrOnLifetime(fields map[string]json.RawMessage, sentAt time.Time) (time.Duration, time.Time, string) {
	expiresIn, expiresAt, reason := expiresInLifetime(fields, sentAt)
	rawOn, hasOn := fields["expires_on"]
	switch _, hasIn := fields["expires_in"]; {
	case !hasOn && !hasIn:
		return 0, time.Time{}, "expires_in and expires_on are missing"
	case !hasOn:
		return expiresIn, expiresAt, reason
	}
	on, err := parseExpiresOn(rawOn)
	switch {
	case err != nil && reason == "":
		return expiresIn, expiresAt, ""
	case err != nil:
		return 0, time.Time{}, "expires_on " + err.Error()
	case reason == "" && !on.Before(expiresAt):
		return expiresIn, expiresAt, ""
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

// expiresOnLayouts are App Service's 2017-09-01 API dates, with and without
// AM/PM (which Go applies to a 24-hour hour too: "00:00:00 PM" is noon),
// then the dates MSAL Go reads (TokenResponse.UnmarshalJSON, after MSAL
// .NET #4963): those without a zone are UTC, as there.
var expiresOnLayouts = []string{"1/2/2006 15:04:05 PM -07:00", "1/2/2006 15:04:05 -07:00",
	"01/02/2006 15:04:05", "2006-01-02 15:04:05", time.RFC3339Nano}

// parseExpiresOn reads epoch seconds, as a JSON number or numeric string,
// or a date string of expiresOnLayouts.
func parseExpiresOn(raw json.RawMessage) (time.Time, error) {
	text := numberText(raw)
	for _, layout := range expiresOnLayouts {
		if at, err := time.Parse(layout, text); err == nil {
			return at, nil
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
