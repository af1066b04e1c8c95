package caddymodule

import (
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

// tokenInfo is what may be shown of an application's token: its metadata,
// a fingerprint and its public claims, never the token or its signature.
// The admin API (GET /entra/tokens) and `caddy entra token` print it.
type tokenInfo struct {
	ApplicationName      string              `json:"applicationName"`
	Scope                string              `json:"scope"`
	Identity             identityInfo        `json:"identity"`
	AccessTokenExpiresAt *time.Time          `json:"accessTokenExpiresAt,omitempty"`
	Fingerprint          string              `json:"fingerprint,omitempty"`
	Claims               *entra.PublicClaims `json:"claims,omitempty"`
}

// identityInfo names whose tokens an application gets and how they are
// asked for: never the credential's value.
type identityInfo struct {
	TenantID      string `json:"tenant,omitempty"`
	ClientID      string `json:"client_id,omitempty"`
	TokenEndpoint string `json:"token_endpoint"`
	// Credential is the kind: client_secret, client_certificate,
	// federated_token or managed_identity.
	Credential string `json:"credential"`
}

// identityOf describes client.
func identityOf(client *entra.Client) identityInfo {
	return identityInfo{
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
