package entraapp

import (
	"errors"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// tokenInfo is what the admin API and `caddy entra token` show of a token:
// metadata, a fingerprint and public claims, never the token or signature.
type tokenInfo struct {
	ApplicationName      string              `json:"applicationName"`
	Scope                string              `json:"scope"`
	Identity             clientInfo          `json:"identity"`
	OnBehalfOf           bool                `json:"onBehalfOf,omitempty"` // exchanges users' tokens: no token of its own
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

// clientInfo names whose tokens an application gets, never the credential.
type clientInfo struct {
	TenantID      string `json:"tenant,omitempty"`
	ClientID      string `json:"client_id,omitempty"`
	TokenEndpoint string `json:"token_endpoint"`
	Credential    string `json:"credential"` // its kind
}

// backoffInfo is the failure state of an application's token requests.
type backoffInfo struct {
	Until    time.Time `json:"until"` // when token requests may resume
	Active   bool      `json:"active"`
	Kind     string    `json:"kind"` // transient or permanent
	Attempts int       `json:"attempts"`
	Message  string    `json:"message,omitempty"`
	ErrorInfo
}

// ErrorInfo is what the token endpoint said of a failure this replica saw.
type ErrorInfo struct {
	Error         string `json:"error,omitempty"`
	ErrorCodes    []int  `json:"errorCodes,omitempty"`
	TraceID       string `json:"traceId,omitempty"`
	CorrelationID string `json:"correlationId,omitempty"`
}

func clientInfoOf(client *entra.Client) clientInfo {
	return clientInfo{
		TenantID:      client.TenantID(),
		ClientID:      client.ClientID(),
		TokenEndpoint: client.TokenEndpoint(),
		Credential:    client.CredentialType(),
	}
}

// withToken fills in what accessToken may show.
func (ti *tokenInfo) withToken(accessToken string, expiresAt time.Time) {
	if accessToken == "" {
		return
	}
	expiresAt = expiresAt.UTC().Truncate(time.Millisecond) // as records hold it
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

// backoffOf describes a failure (whose fields never carry a token or secret).
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

// ErrorInfoOf is what err says of the token endpoint's answer, if anything.
func ErrorInfoOf(err error) ErrorInfo {
	var re *entra.RequestError
	if !errors.As(err, &re) {
		return ErrorInfo{}
	}
	return ErrorInfo{Error: re.Code, ErrorCodes: re.ErrorCodes, TraceID: re.TraceID, CorrelationID: re.CorrelationID}
}
