package entratokenendpoint

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// recordBody is better-auth-client-credential's ClientCredential record:
// exactly its fields, times in RFC 3339 (UTC).
type recordBody struct {
	ID                   string `json:"id"`
	ApplicationName      string `json:"applicationName"`
	AccessToken          string `json:"accessToken"`
	AccessTokenExpiresAt string `json:"accessTokenExpiresAt"`
	Scope                string `json:"scope"`
	CreatedAt            string `json:"createdAt"`
	UpdatedAt            string `json:"updatedAt"`
}

// recordRequest is getClientCredentialToken's argument; Assertion, the
// user's token to exchange, comes in a POST only (never in a URL).
type recordRequest struct {
	ApplicationName string `json:"applicationName"`
	Assertion       string `json:"assertion,omitempty"`
}

// maxRecordRequestBytes bounds a body: a name and a user's token.
const maxRecordRequestBytes = 4<<10 + entra.MaxUserTokenBytes

// serveRecord answers POST {"applicationName": ...} or GET ?applicationName=.
func (e *TokenEndpoint) serveRecord(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		return e.refuse(w, r, &refusal{http.StatusMethodNotAllowed, reasonMethod, "METHOD_NOT_ALLOWED", "use GET or POST"})
	}
	if rf := e.checkSecret(r); rf != nil {
		return e.refuse(w, r, rf)
	}
	req, rf := readRecordRequest(r)
	if rf != nil {
		return e.refuse(w, r, rf)
	}
	name := req.ApplicationName
	ea, ok := e.allowed[name]
	if !ok {
		// The same for one not configured and one not allowed here.
		return e.refuse(w, r, &refusal{http.StatusNotFound, reasonApplication, entraapp.CodeApplicationNotFound,
			fmt.Sprintf("application %s is not available on this endpoint", quoteForClient(name))})
	}
	var credential tokencache.Record
	var err error
	if _, onBehalfOf := e.app.UserTokenHeader(name); onBehalfOf {
		credential, err = e.app.ExchangeUserToken(r.Context(), name, req.Assertion, "assertion")
	} else {
		credential, err = e.app.Token(r.Context(), name)
	}
	if err != nil {
		return e.refuseToken(w, r, name, err)
	}
	e.handedOut(ea, credential)
	return writeJSONResponse(w, http.StatusOK, recordBody{
		ID:                   credential.ID,
		ApplicationName:      credential.ApplicationName,
		AccessToken:          credential.AccessToken,
		AccessTokenExpiresAt: rfc3339(credential.AccessTokenExpiresAt),
		Scope:                credential.Scope,
		CreatedAt:            rfc3339(credential.CreatedAt),
		UpdatedAt:            rfc3339(credential.UpdatedAt),
	})
}

func readRecordRequest(r *http.Request) (recordRequest, *refusal) {
	bad := func(message string) (recordRequest, *refusal) {
		return recordRequest{}, &refusal{http.StatusBadRequest, reasonBadRequest, "BAD_REQUEST", message}
	}
	if r.Method == http.MethodGet {
		values := r.URL.Query()["applicationName"]
		if len(values) != 1 || values[0] == "" {
			return bad("the applicationName query parameter is required, once")
		}
		return recordRequest{ApplicationName: values[0]}, nil
	}
	if mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mediaType != "application/json" {
		return bad("the body must be JSON (Content-Type: application/json)")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRecordRequestBytes+1))
	if err != nil {
		return bad("reading the body failed")
	}
	if len(body) > maxRecordRequestBytes {
		return bad("the body is too large")
	}
	var req recordRequest
	if err := json.Unmarshal(body, &req); err != nil || req.ApplicationName == "" {
		return bad(`the body must be {"applicationName": "<name>"} (and "assertion": "<user token>" for an on-behalf-of application)`)
	}
	return req, nil
}

// miProtocol is a managed-identity protocol. Each accepts the other's
// identity parameter names too: one is never ignored.
type miProtocol struct {
	name                             string
	apiVersions                      []string
	objectIDParams, resourceIDParams []string
}

var (
	appServiceProtocol = &miProtocol{
		name:             ProtocolAppService,
		apiVersions:      []string{"2019-08-01"},
		objectIDParams:   []string{"principal_id", "object_id"},
		resourceIDParams: []string{"mi_res_id", "msi_res_id"},
	}
	imdsProtocol = &miProtocol{
		name:             ProtocolIMDS,
		apiVersions:      []string{"2018-02-01", "2019-08-01"},
		objectIDParams:   []string{"object_id", "principal_id"},
		resourceIDParams: []string{"msi_res_id", "mi_res_id"},
	}
)

type appServiceError struct {
	StatusCode    int    `json:"statusCode"`
	Message       string `json:"message"`
	CorrelationID string `json:"correlationId"`
}

type imdsError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

type appServiceToken struct {
	AccessToken string `json:"access_token"`
	ExpiresOn   string `json:"expires_on"`
	Resource    string `json:"resource"`
	TokenType   string `json:"token_type"`
	ClientID    string `json:"client_id"`
}

// imdsToken is IMDS's answer: every number a string.
type imdsToken struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    string `json:"expires_in"`
	ExpiresOn    string `json:"expires_on"`
	ExtExpiresIn string `json:"ext_expires_in"`
	NotBefore    string `json:"not_before"`
	Resource     string `json:"resource"`
	TokenType    string `json:"token_type"`
	ClientID     string `json:"client_id"`
}

// identityParam is an identity a managed-identity request names.
type identityParam struct {
	kind  string // client_id, object_id or resource_id
	name  string // the query parameter, for messages
	value string
}

func (e *TokenEndpoint) serveManagedIdentity(w http.ResponseWriter, r *http.Request, p *miProtocol) error {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		return e.refuse(w, r, &refusal{http.StatusMethodNotAllowed, reasonMethod, "invalid_request", "only GET is supported"})
	}
	if p == imdsProtocol {
		if !strings.EqualFold(r.Header.Get("Metadata"), "true") {
			return e.refuse(w, r, &refusal{http.StatusBadRequest, reasonNoMetadata, "invalid_request", "Required metadata header not specified"})
		}
	} else if rf := e.checkSecret(r); rf != nil {
		return e.refuse(w, r, rf)
	}
	query := r.URL.Query()
	resource, identity, rf := p.readRequest(query)
	if rf != nil {
		return e.refuse(w, r, rf)
	}
	ea, ok := e.byResource[normalizeResource(resource)]
	if !ok {
		return e.refuse(w, r, &refusal{http.StatusBadRequest, reasonResource, "invalid_resource",
			fmt.Sprintf("no application of this endpoint serves resource %s", quoteForClient(resource))})
	}
	// An identity the config names is checked before any token is had; one
	// only the token tells, after (and the token is then kept back).
	known := identity != nil && ea.configured(identity.kind) != ""
	if known && !strings.EqualFold(ea.configured(identity.kind), identity.value) ||
		identity != nil && identity.kind == "resource_id" && !ea.ManagedIdentity {
		return e.refuse(w, r, identityMismatch(identity, ea.Name))
	}
	credential, err := e.app.Token(r.Context(), ea.Name)
	if err != nil {
		return e.refuseToken(w, r, ea.Name, err)
	}
	// Unverified claims: the cache checked the token; they only decide whether to hand it out.
	claims, _ := entra.ReadPublicClaims(credential.AccessToken) // none for an opaque token
	if identity != nil && !known &&
		!strings.EqualFold(pick(identity.kind, claims.AppID, claims.ObjectID, claims.ResourceID), identity.value) {
		return e.refuse(w, r, identityMismatch(identity, ea.Name))
	}
	clientID := cmp.Or(ea.ClientID, claims.AppID)
	e.handedOut(ea, credential)
	expiresOn := strconv.FormatInt(credential.AccessTokenExpiresAt.Unix(), 10)
	if p == appServiceProtocol {
		return writeJSONResponse(w, http.StatusOK, appServiceToken{
			AccessToken: credential.AccessToken,
			ExpiresOn:   expiresOn,
			Resource:    resource,
			TokenType:   "Bearer",
			ClientID:    clientID,
		})
	}
	expiresIn := strconv.FormatInt(int64(time.Until(credential.AccessTokenExpiresAt)/time.Second), 10)
	notBefore := credential.UpdatedAt
	if claims.NotBefore != nil && claims.NotBefore.Unix() > 0 {
		notBefore = *claims.NotBefore
	}
	return writeJSONResponse(w, http.StatusOK, imdsToken{
		AccessToken:  credential.AccessToken,
		ExpiresIn:    expiresIn,
		ExpiresOn:    expiresOn,
		ExtExpiresIn: expiresIn,
		NotBefore:    strconv.FormatInt(notBefore.Unix(), 10),
		Resource:     resource,
		TokenType:    "Bearer",
		ClientID:     clientID,
	})
}

// readRequest checks api-version and reads the resource and the identity
// parameter, if any.
func (p *miProtocol) readRequest(query url.Values) (string, *identityParam, *refusal) {
	bad := func(message string) (string, *identityParam, *refusal) {
		return "", nil, &refusal{http.StatusBadRequest, reasonBadRequest, "invalid_request", message}
	}
	versions := query["api-version"]
	switch {
	case len(versions) == 0 || versions[0] == "":
		return bad("Required query variable 'api-version' is missing")
	case len(versions) > 1 || !slices.Contains(p.apiVersions, versions[0]):
		return bad("Invalid api-version: supported are " + strings.Join(p.apiVersions, ", "))
	}
	resources := query["resource"]
	if len(resources) == 0 || strings.TrimSpace(resources[0]) == "" {
		return bad("Required audience parameter not specified")
	}
	if len(resources) > 1 {
		return bad("resource may be given once")
	}
	var named []identityParam
	add := func(kind string, names []string) {
		for _, name := range names {
			for _, value := range query[name] {
				named = append(named, identityParam{kind: kind, name: name, value: value})
			}
		}
	}
	add("client_id", []string{"client_id"})
	add("object_id", p.objectIDParams)
	add("resource_id", p.resourceIDParams)
	switch {
	case len(named) > 1:
		return bad("Only one of client_id, " + p.objectIDParams[0] + " and " + p.resourceIDParams[0] + " may be specified")
	case len(named) == 1 && named[0].value == "":
		return bad(named[0].name + " must not be empty")
	case len(named) == 1:
		return resources[0], &named[0], nil
	}
	return resources[0], nil, nil
}

// configured is the ID of kind the config gives, "" if only a token tells.
func (ea *endpointApplication) configured(kind string) string {
	return pick(kind, ea.ClientID, ea.ObjectID, ea.ResourceID)
}

func pick(kind, clientID, objectID, resourceID string) string {
	switch kind {
	case "client_id":
		return clientID
	case "object_id":
		return objectID
	}
	return resourceID
}

// identityMismatch refuses an identity parameter that does not name the
// mapped application's identity.
func identityMismatch(identity *identityParam, application string) *refusal {
	return &refusal{http.StatusBadRequest, reasonIdentity, "invalid_request",
		fmt.Sprintf("Identity not found: %s does not name the identity of the application serving this resource (%s)",
			identity.name, application)}
}

// writeJSONResponse writes v as JSON with status.
func writeJSONResponse(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, err = w.Write(body)
	return err
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// correlationID is the client's x-ms-client-request-id if sane, else a random UUID.
func correlationID(r *http.Request) string {
	if id := r.Header.Get("X-Ms-Client-Request-Id"); len(id) <= 64 && id != "" && strings.IndexFunc(id, notIDRune) < 0 {
		return id
	}
	return uuid.NewString()
}

func notIDRune(c rune) bool {
	return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-')
}

// quoteForClient quotes a value the client sent, cut to a sane length.
func quoteForClient(s string) string {
	const maxLen = 200
	if len(s) > maxLen {
		s = strings.ToValidUTF8(s[:maxLen], "") + "..."
	}
	return strconv.Quote(s)
}
