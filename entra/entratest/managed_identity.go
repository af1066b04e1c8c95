package entratest

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Paths of the managed identity endpoints the emulator serves.
const (
	// IMDSPath is the Azure Instance Metadata Service token path: point
	// entra.ManagedIdentityCredential.IMDSEndpoint at server.URL + IMDSPath.
	IMDSPath = "/metadata/identity/oauth2/token"

	// AppServicePath is the App Service / Container Apps identity endpoint
	// path: point IdentityEndpoint (IDENTITY_ENDPOINT) at server.URL +
	// AppServicePath.
	AppServicePath = "/msi/token"
)

// API versions the managed identity endpoints accept.
const (
	IMDSAPIVersion       = "2018-02-01"
	AppServiceAPIVersion = "2019-08-01"
)

// ManagedIdentity is one managed identity of the emulated host and the
// three IDs that name it.
type ManagedIdentity struct {
	ClientID string
	// ObjectID is its object (principal) ID, derived from the client ID.
	ObjectID string
	// ResourceID is its Azure resource ID, derived from the client ID:
	// /subscriptions/<uuid>/resourcegroups/entratest/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<client ID>.
	ResourceID string
}

// AddManagedIdentity gives the emulated host a managed identity with
// clientID and returns it. With system, it is the system-assigned identity
// (the one a request that names none gets; a later system identity replaces
// it); otherwise a user-assigned identity, selected by client_id, by object
// ID (IMDS object_id, App Service principal_id) or by resource ID (IMDS
// msi_res_id, App Service mi_res_id).
func (e *Emulator) AddManagedIdentity(clientID string, system bool) ManagedIdentity {
	sum := sha256.Sum256([]byte("managed identity\x00" + e.tenantID + "\x00" + clientID))
	identity := ManagedIdentity{
		ClientID:   clientID,
		ObjectID:   uuidFromBytes(sum[:16]),
		ResourceID: "/subscriptions/" + uuidFromBytes(sum[16:]) + "/resourcegroups/entratest/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + clientID,
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.managedIdentities[clientID] = identity
	if system {
		e.systemIdentity = clientID
	}
	return identity
}

// SetIdentityHeader sets the secret the App Service endpoint requires in
// X-IDENTITY-HEADER (IDENTITY_HEADER). Until it is set, that endpoint
// rejects every request.
func (e *Emulator) SetIdentityHeader(secret string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.identityHeader = secret
}

// imdsError writes IMDS's error shape.
func imdsError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]any{"error": code, "error_description": description})
}

// appServiceError writes App Service's error shape.
func appServiceError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]any{"statusCode": status, "message": message, "correlationId": newUUID()})
}

// handleIMDS serves GET /metadata/identity/oauth2/token as IMDS does.
func (e *Emulator) handleIMDS(w http.ResponseWriter, r *http.Request) {
	e.tokenRequests.Add(1)
	if f, ok := e.nextFailure(); ok {
		e.writeFailure(w, r, f)
		return
	}
	query := r.URL.Query()
	switch {
	case r.Header.Get("Metadata") != "true":
		imdsError(w, http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
		return
	case r.Header.Get("X-Forwarded-For") != "":
		imdsError(w, http.StatusBadRequest, "invalid_request", "Request contains X-Forwarded-For header")
		return
	case query.Get("api-version") == "":
		imdsError(w, http.StatusBadRequest, "invalid_request", "Required query variable 'api-version' is missing")
		return
	case query.Get("api-version") != IMDSAPIVersion:
		imdsError(w, http.StatusBadRequest, "invalid_request", "Invalid api-version (the emulator serves "+IMDSAPIVersion+")")
		return
	case query.Get("resource") == "":
		imdsError(w, http.StatusBadRequest, "invalid_request", "Required audience parameter not specified")
		return
	}
	identity, found, ambiguous := e.selectIdentity(query, "object_id", "msi_res_id")
	switch {
	case ambiguous:
		imdsError(w, http.StatusBadRequest, "invalid_request", "Multiple identity parameters specified; use one of client_id, object_id, msi_res_id")
		return
	case !found:
		imdsError(w, http.StatusBadRequest, "invalid_request", "Identity not found")
		return
	}
	resource := query.Get("resource")
	now, lifetime, accessToken, ok := e.issueManagedIdentityToken(w, r, identity, resource)
	if !ok {
		return
	}
	seconds := strconv.FormatInt(int64(lifetime/time.Second), 10)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":   accessToken,
		"client_id":      identity.ClientID,
		"expires_in":     seconds,
		"expires_on":     strconv.FormatInt(now.Add(lifetime).Unix(), 10),
		"ext_expires_in": seconds,
		"not_before":     strconv.FormatInt(now.Unix(), 10),
		"resource":       resource,
		"token_type":     "Bearer",
	})
}

// handleAppService serves GET /msi/token as the App Service / Container
// Apps identity endpoint (api-version 2019-08-01) does.
func (e *Emulator) handleAppService(w http.ResponseWriter, r *http.Request) {
	e.tokenRequests.Add(1)
	if f, ok := e.nextFailure(); ok {
		e.writeFailure(w, r, f)
		return
	}
	e.mu.Lock()
	want := e.identityHeader
	e.mu.Unlock()
	query := r.URL.Query()
	got := r.Header.Get("X-IDENTITY-HEADER")
	switch {
	case want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1:
		appServiceError(w, http.StatusUnauthorized, "Unable to validate the X-IDENTITY-HEADER header.")
		return
	case query.Get("api-version") != AppServiceAPIVersion:
		appServiceError(w, http.StatusBadRequest, "The api-version is missing or not supported (the emulator serves "+AppServiceAPIVersion+").")
		return
	case query.Get("resource") == "":
		appServiceError(w, http.StatusBadRequest, "The resource parameter is required.")
		return
	}
	if objectID := query.Get("object_id"); objectID != "" {
		// App Service takes object_id as an alias of principal_id.
		if query.Get("principal_id") != "" {
			appServiceError(w, http.StatusBadRequest, "Only one of client_id, principal_id (object_id) and mi_res_id may be specified.")
			return
		}
		query.Set("principal_id", objectID)
	}
	identity, found, ambiguous := e.selectIdentity(query, "principal_id", "mi_res_id")
	switch {
	case ambiguous:
		appServiceError(w, http.StatusBadRequest, "Only one of client_id, principal_id and mi_res_id may be specified.")
		return
	case !found:
		appServiceError(w, http.StatusBadRequest, "No managed identity found for the request.")
		return
	}
	resource := query.Get("resource")
	now, lifetime, accessToken, ok := e.issueManagedIdentityToken(w, r, identity, resource)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": accessToken,
		"expires_on":   strconv.FormatInt(now.Add(lifetime).Unix(), 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    identity.ClientID,
	})
}

// selectIdentity returns the identity the query names by client_id, by
// objectIDParam or by resourceIDParam (resource IDs compare without regard
// to case, as Azure's do), or the system-assigned identity when it names
// none. ambiguous: it names more than one.
func (e *Emulator) selectIdentity(query url.Values, objectIDParam, resourceIDParam string) (identity ManagedIdentity, found, ambiguous bool) {
	clientID, objectID, resourceID := query.Get("client_id"), query.Get(objectIDParam), query.Get(resourceIDParam)
	named := 0
	for _, id := range []string{clientID, objectID, resourceID} {
		if id != "" {
			named++
		}
	}
	if named > 1 {
		return ManagedIdentity{}, false, true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if named == 0 {
		identity, found = e.managedIdentities[e.systemIdentity]
		return identity, found && e.systemIdentity != "", false
	}
	for _, candidate := range e.managedIdentities {
		if clientID != "" && candidate.ClientID == clientID ||
			objectID != "" && candidate.ObjectID == objectID ||
			resourceID != "" && strings.EqualFold(candidate.ResourceID, resourceID) {
			return candidate, true, false
		}
	}
	return ManagedIdentity{}, false, false
}

// issueManagedIdentityToken waits out the response delay and signs a token
// for identity: aud = resource, appid = the identity's client ID. On
// failure it has answered the request and returns false.
func (e *Emulator) issueManagedIdentityToken(w http.ResponseWriter, r *http.Request, identity ManagedIdentity, resource string) (time.Time, time.Duration, string, bool) {
	e.mu.Lock()
	lifetime, delay := e.lifetime, e.responseDelay
	e.mu.Unlock()
	if !sleep(r.Context(), delay) {
		return time.Time{}, 0, "", false
	}
	lifetime = max(lifetime.Truncate(time.Second), time.Second)
	now := e.now()
	accessToken, err := e.issue(grantee{clientID: identity.ClientID, acr: acrCertificate, tenantID: e.tenantID,
		objectID: identity.ObjectID, subject: identity.ObjectID}, resource, now, lifetime)
	if err != nil {
		http.Error(w, fmt.Sprintf("signing failed: %v", err), http.StatusInternalServerError)
		return time.Time{}, 0, "", false
	}
	e.issuedTokens.Add(1)
	w.Header().Set("Cache-Control", "no-store, no-cache")
	return now, lifetime, accessToken, true
}
