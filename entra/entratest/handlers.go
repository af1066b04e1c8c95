package entratest

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxFormBytes bounds a token request body.
const maxFormBytes = 1 << 20

// entraError is one of Entra's token endpoint errors.
type entraError struct {
	status      int
	code        string // the "error" field
	aadsts      int
	description string // without the "AADSTSnnn: " prefix
}

// userError is an on-behalf-of exchange's error about the user, with
// Entra's suberror and claims challenge.
type userError struct {
	entraError
	suberror, claims string
}

func (e *Emulator) handleToken(w http.ResponseWriter, r *http.Request) {
	e.tokenRequests.Add(1)
	defer e.concurrent.enter()()
	// Read the whole body first: only then does net/http watch the
	// connection and cancel r.Context() when the client goes away, which a
	// delayed answer relies on.
	form := e.parseForm(w, r)
	grantType := form.Get("grant_type")
	if grantType == JWTBearerGrantType {
		e.onBehalfOfRequests.Add(1)
	}
	if f, ok := e.nextFailure(); ok {
		e.writeFailure(w, r, f)
		return
	}
	tenant, ok := e.tenantOf(r.PathValue("tenant"))
	if !ok {
		e.writeError(w, r, tenantNotFound(r.PathValue("tenant")))
		return
	}

	switch grantType {
	case "":
		e.writeError(w, r, missingParameter("grant_type"))
		return
	case "client_credentials", JWTBearerGrantType:
	default:
		e.writeError(w, r, entraError{http.StatusBadRequest, "unsupported_grant_type", 70003,
			fmt.Sprintf("The app requested an unsupported grant type '%s'.", grantType)})
		return
	}

	clientID, secret, ee := e.clientSecretOf(r, form)
	if ee != nil {
		e.writeError(w, r, *ee)
		return
	}
	if clientID == "" {
		e.writeError(w, r, missingParameter("client_id"))
		return
	}
	e.mu.Lock()
	registered, known := e.clients[clientID]
	lifetime, delay := e.lifetime, e.responseDelay
	e.mu.Unlock()
	if !known {
		e.writeError(w, r, entraError{http.StatusBadRequest, "unauthorized_client", 700016,
			fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", clientID, e.tenantID)})
		return
	}
	acr := acrSecret
	if assertion := form.Get("client_assertion"); assertion != "" {
		if ee := e.checkAssertionForm(form, secret); ee != nil {
			e.writeError(w, r, *ee)
			return
		}
		if ee := e.validateAssertion(r, clientID, registered, assertion); ee != nil {
			e.writeError(w, r, *ee)
			return
		}
		acr = acrCertificate
	} else {
		if secret == "" {
			e.writeError(w, r, entraError{http.StatusUnauthorized, "invalid_client", 7000216,
				fmt.Sprintf("'client_assertion', 'client_secret' or 'request' is required for the '%s' grant type.", grantType)})
			return
		}
		if registered.secret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(registered.secret)) != 1 {
			e.writeError(w, r, entraError{http.StatusUnauthorized, "invalid_client", 7000215,
				fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", clientID)})
			return
		}
	}

	scope := form.Get("scope")
	if strings.TrimSpace(scope) == "" {
		e.writeError(w, r, entraError{http.StatusBadRequest, "invalid_request", 90014,
			"The required field 'scope' is missing from the credential. Ensure that you have all the necessary parameters for the login request."})
		return
	}
	g := grantee{clientID: clientID, acr: acr, tenantID: tenant, objectID: registered.objectID, subject: registered.objectID}
	if g.capabilities, ee = capabilitiesOf(form.Get("claims")); ee != nil {
		e.writeError(w, r, *ee)
		return
	}
	var resource string
	if grantType == JWTBearerGrantType {
		var ue *userError
		if resource, ue = e.onBehalfOf(form, clientID, registered, &g); ue != nil {
			e.writeUserError(w, r, *ue)
			return
		}
	} else if resource, ee = resourceOf(scope); ee != nil {
		e.writeError(w, r, *ee)
		return
	}

	if !sleep(r.Context(), delay) {
		return
	}
	lifetime = max(lifetime.Truncate(time.Second), time.Second)
	accessToken, err := e.issue(g, resource, e.now(), lifetime)
	if err != nil {
		http.Error(w, "signing failed", http.StatusInternalServerError)
		return
	}
	e.issuedTokens.Add(1)
	e.notifyIssued(Issued{Resource: resource, ObjectID: g.objectID, AccessToken: accessToken, ExpiresAt: e.now().Add(lifetime),
		Claims: form.Get("claims")})

	seconds := int64(lifetime / time.Second)
	setCommonHeaders(w, r, newUUID())
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":     "Bearer",
		"expires_in":     seconds,
		"ext_expires_in": seconds,
		"access_token":   accessToken,
	})
}

// parseForm returns the form-encoded body; anything else (JSON, a query
// string) counts as no parameters, as at Entra.
func (e *Emulator) parseForm(w http.ResponseWriter, r *http.Request) formValues {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	defer func() { _, _ = io.Copy(io.Discard, r.Body) }()
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mediaType != "application/x-www-form-urlencoded" {
		return nil
	}
	if err := r.ParseForm(); err != nil {
		return nil
	}
	return formValues(r.PostForm)
}

type formValues map[string][]string

func (f formValues) Get(name string) string {
	if v := f[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// resourceOf checks a client-credentials scope: every value must be
// "{resource}/.default", all for the same resource.
func resourceOf(scope string) (string, *entraError) {
	var resource string
	for _, value := range strings.Fields(scope) {
		r, ok := strings.CutSuffix(value, "/.default")
		if !ok || r == "" {
			return "", &entraError{http.StatusBadRequest, "invalid_scope", 1002012,
				fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", scope)}
		}
		if resource != "" && r != resource {
			return "", &entraError{http.StatusBadRequest, "invalid_scope", 28000,
				fmt.Sprintf("Provided value for the input parameter scope is not valid because it contains more than one resource. Scope %s is not valid.", scope)}
		}
		resource = r
	}
	return resource, nil
}

func tenantNotFound(tenant string) entraError {
	return entraError{http.StatusBadRequest, "invalid_request", 90002,
		fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.", tenant)}
}

func missingParameter(name string) entraError {
	return entraError{http.StatusBadRequest, "invalid_request", 900144,
		fmt.Sprintf("The request body must contain the following parameter: '%s'.", name)}
}

func (e *Emulator) writeError(w http.ResponseWriter, r *http.Request, ee entraError) {
	e.writeUserError(w, r, userError{entraError: ee})
}

func (e *Emulator) writeUserError(w http.ResponseWriter, r *http.Request, ue userError) {
	writeEntraError(w, r, ue.status, ue.code, fmt.Sprintf("AADSTS%d: %s", ue.aadsts, ue.description), []int{ue.aadsts}, ue.suberror, ue.claims)
}

// writeFailure answers a request as an injected Failure says.
func (e *Emulator) writeFailure(w http.ResponseWriter, r *http.Request, f Failure) {
	if !sleep(r.Context(), f.Delay) {
		return
	}
	status := f.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.Body != "" {
		contentType := f.ContentType
		if contentType == "" {
			contentType = "application/json; charset=utf-8"
		}
		setCommonHeaders(w, r, newUUID())
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(f.Body))
		return
	}
	code := f.Error
	if code == "" {
		code = "invalid_request"
		if status == http.StatusTooManyRequests || status >= 500 {
			code = "temporarily_unavailable"
		}
	}
	description := f.Description
	if description == "" {
		description = "Emulated failure."
	}
	if len(f.ErrorCodes) > 0 && !strings.HasPrefix(description, "AADSTS") {
		description = fmt.Sprintf("AADSTS%d: %s", f.ErrorCodes[0], description)
	}
	if f.ContentType != "" {
		w.Header().Set("Content-Type", f.ContentType)
	}
	writeEntraError(w, r, status, code, description, f.ErrorCodes, f.SubError, f.Claims)
}

// writeEntraError writes Entra's error body: the description followed by
// trace ID, correlation ID and timestamp lines, the same IDs as fields, and
// the suberror and claims challenge when there are.
func writeEntraError(w http.ResponseWriter, r *http.Request, status int, code, description string, codes []int, suberror, claims string) {
	traceID, correlationID := newUUID(), requestCorrelationID(r)
	timestamp := time.Now().UTC().Format("2006-01-02 15:04:05Z")
	if codes == nil {
		codes = []int{}
	}
	body := map[string]any{
		"error": code,
		"error_description": fmt.Sprintf("%s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s",
			description, traceID, correlationID, timestamp),
		"error_codes":    codes,
		"timestamp":      timestamp,
		"trace_id":       traceID,
		"correlation_id": correlationID,
	}
	if suberror != "" {
		body["suberror"] = suberror
	}
	if claims != "" {
		body["claims"] = claims
	}
	if len(codes) > 0 {
		body["error_uri"] = baseURL(r) + "/error?code=" + strconv.Itoa(codes[0])
	}
	setCommonHeaders(w, r, traceID)
	writeJSON(w, status, body)
}

// requestCorrelationID is the client's client-request-id when it sent a
// sane one (Entra echoes it), else a fresh one.
func requestCorrelationID(r *http.Request) string {
	id := r.Header.Get("Client-Request-Id")
	if len(id) == 0 || len(id) > 64 || !isSafeSegment(id) {
		return newUUID()
	}
	return id
}

func setCommonHeaders(w http.ResponseWriter, r *http.Request, traceID string) {
	h := w.Header()
	h.Set("Cache-Control", "no-store, no-cache")
	h.Set("Pragma", "no-cache")
	h.Set("X-Ms-Request-Id", traceID)
	if id := r.Header.Get("Client-Request-Id"); id != "" && len(id) <= 64 && isSafeSegment(id) {
		h.Set("Client-Request-Id", id)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encoding failed", http.StatusInternalServerError)
		return
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// baseURL is the scheme and host the request reached the emulator at.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (e *Emulator) handleKeys(w http.ResponseWriter, r *http.Request) {
	tenant, ok := e.tenantOf(r.PathValue("tenant"))
	if !ok {
		e.writeError(w, r, tenantNotFound(r.PathValue("tenant")))
		return
	}
	pub := e.key.PublicKey
	w.Header().Set("Cache-Control", "max-age=86400, private")
	writeJSON(w, http.StatusOK, map[string]any{
		"keys": []map[string]any{{
			"kty":    "RSA",
			"use":    "sig",
			"kid":    e.kid,
			"x5t":    e.kid,
			"n":      base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			"e":      base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
			"x5c":    []string{base64.StdEncoding.EncodeToString(e.certDER)},
			"issuer": e.issuerOf(tenant),
		}},
	})
}

func (e *Emulator) handleOpenIDConfiguration(w http.ResponseWriter, r *http.Request) {
	e.discoveryRequests.Add(1)
	tenant, ok := e.tenantOf(r.PathValue("tenant"))
	if !ok {
		e.writeError(w, r, tenantNotFound(r.PathValue("tenant")))
		return
	}
	base := baseURL(r) + "/" + tenant
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                e.issuerOf(tenant),
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "client_secret_basic", "private_key_jwt"},
		"grant_types_supported":                 []string{"client_credentials", JWTBearerGrantType},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"token"},
		"subject_types_supported":               []string{"pairwise"},
		"scopes_supported":                      []string{".default"},
		"tenant_region_scope":                   nil,
	})
}
