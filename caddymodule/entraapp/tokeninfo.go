package entraapp

import (
	"errors"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// tokenInfo is what may be shown of an application's token: its metadata,
// a fingerprint and its public claims, never the token or its signature.
// The admin API (GET /entra/tokens) and `caddy entra token` print it; the
// cache's fields (record key onwards) are the admin API's only.
type tokenInfo struct {
	ApplicationName      string              `json:"applicationName"`
	Scope                string              `json:"scope"`
	Identity             clientInfo          `json:"identity"`
	RecordKey            string              `json:"recordKey,omitempty"`
	AccessTokenExpiresAt *time.Time          `json:"accessTokenExpiresAt,omitempty"`
	CreatedAt            *time.Time          `json:"createdAt,omitempty"`
	UpdatedAt            *time.Time          `json:"updatedAt,omitempty"`
	Usable               *bool               `json:"usable,omitempty"`
	NextRefreshAt        *time.Time          `json:"nextRefreshAt,omitempty"`
	Source               string              `json:"source,omitempty"`
	Fingerprint          string              `json:"fingerprint,omitempty"`
	Claims               *entra.PublicClaims `json:"claims,omitempty"`
	Backoff              *backoffInfo        `json:"backoff,omitempty"`
}

// clientInfo names whose tokens an application gets and how they are
// asked for: never the credential's value.
type clientInfo struct {
	TenantID      string `json:"tenant,omitempty"`
	ClientID      string `json:"client_id,omitempty"`
	TokenEndpoint string `json:"token_endpoint"`
	// Credential is the kind: client_secret, client_certificate,
	// federated_token or managed_identity.
	Credential string `json:"credential"`
}

// backoffInfo is the failure state of an application's token requests.
type backoffInfo struct {
	// Until is when token requests may resume; Active whether that is
	// still ahead.
	Until  time.Time `json:"until"`
	Active bool      `json:"active"`
	// Kind is transient (throttling, an unavailable endpoint) or permanent
	// (retrying cannot help until the configuration changes).
	Kind     string `json:"kind"`
	Attempts int    `json:"attempts"`
	Message  string `json:"message,omitempty"`
	ErrorInfo
}

// ErrorInfo is what the token endpoint said of a failure, when this
// replica saw it: its error, AADSTS numbers, trace and correlation IDs.
type ErrorInfo struct {
	Error         string `json:"error,omitempty"`
	ErrorCodes    []int  `json:"errorCodes,omitempty"`
	TraceID       string `json:"traceId,omitempty"`
	CorrelationID string `json:"correlationId,omitempty"`
}

// clientInfoOf describes client.
func clientInfoOf(client *entra.Client) clientInfo {
	return clientInfo{
		TenantID:      client.TenantID(),
		ClientID:      client.ClientID(),
		TokenEndpoint: client.TokenEndpoint(),
		Credential:    client.CredentialType(),
	}
}

// withToken fills in what accessToken, expiring at expiresAt, may show.
func (ti *tokenInfo) withToken(accessToken string, expiresAt time.Time) {
	if accessToken == "" {
		return
	}
	expiresAt = expiresAt.UTC()
	ti.AccessTokenExpiresAt = &expiresAt
	ti.Fingerprint = entra.Fingerprint(accessToken)
	if claims, ok := entra.ReadPublicClaims(accessToken); ok {
		ti.Claims = &claims
	}
}

// timeOrNil is t in UTC, nil when zero.
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC().Truncate(time.Millisecond)
	return &t
}

// backoffOf describes a failure: never a token or a secret (the message
// and the endpoint's error fields never carry one).
func backoffOf(f *tokencache.Failure) *backoffInfo {
	b := &backoffInfo{
		Until:     f.Until.UTC().Truncate(time.Millisecond),
		Active:    f.Active,
		Kind:      "transient",
		Attempts:  f.Attempts,
		Message:   f.Message,
		ErrorInfo: ErrorInfoOf(f.Err),
	}
	if f.Permanent {
		b.Kind = "permanent"
	}
	return b
}

// ErrorInfoOf is what err says of the token endpoint's answer, empty if it
// is not a token endpoint error.
func ErrorInfoOf(err error) ErrorInfo {
	var re *entra.RequestError
	if !errors.As(err, &re) {
		return ErrorInfo{}
	}
	return ErrorInfo{Error: re.Code, ErrorCodes: re.ErrorCodes, TraceID: re.TraceID, CorrelationID: re.CorrelationID}
}
