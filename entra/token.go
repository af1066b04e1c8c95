package entra

import (
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap/zapcore"
)

// Token is an access token issued by the token endpoint.
//
// Formatting a Token or *Token with fmt (%v, %+v, %#v, %s, ...), logging it
// with zap or encoding it to JSON never shows AccessToken (its JSON is a
// one-way summary: it does not decode back into a usable Token). Use the
// field only where the token must go.
type Token struct {
	// AccessToken is the bearer token itself.
	AccessToken string
	// TokenType is "Bearer" (the only type accepted; also when the endpoint
	// omitted token_type or spelled it in another case).
	TokenType string
	// ExpiresIn is the lifetime the endpoint announced (expires_in).
	ExpiresIn time.Duration
	// ExpiresAt is when the request was sent plus ExpiresIn: conservative, as
	// the endpoint started the clock no earlier than that.
	ExpiresAt time.Time
	// ExtExpiresIn is Entra's ext_expires_in (extended lifetime during an
	// outage); 0 when absent or malformed.
	ExtExpiresIn time.Duration
	// RefreshIn is Entra's refresh_in (when it recommends refreshing); 0 when
	// absent or malformed.
	RefreshIn time.Duration
}

// String returns a summary of the token without the access token.
func (t Token) String() string {
	return fmt.Sprintf("entra.Token{AccessToken:%s TokenType:%s ExpiresIn:%s ExpiresAt:%s ExtExpiresIn:%s RefreshIn:%s}",
		t.redactedToken(), t.TokenType, t.ExpiresIn, t.ExpiresAt.Format(time.RFC3339), t.ExtExpiresIn, t.RefreshIn)
}

// GoString is String: %#v must not show the access token either.
func (t Token) GoString() string { return t.String() }

// Format makes every fmt verb print String, so no verb (%x, %q, %+v...)
// reaches the access token through reflection.
func (t Token) Format(f fmt.State, verb rune) {
	_, _ = f.Write([]byte(t.String()))
}

// MarshalLogObject lets zap log a Token (zap.Any, zap.Object) without the
// access token.
func (t Token) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("access_token", t.redactedToken())
	enc.AddString("token_type", t.TokenType)
	enc.AddDuration("expires_in", t.ExpiresIn)
	enc.AddTime("expires_at", t.ExpiresAt)
	if t.ExtExpiresIn > 0 {
		enc.AddDuration("ext_expires_in", t.ExtExpiresIn)
	}
	if t.RefreshIn > 0 {
		enc.AddDuration("refresh_in", t.RefreshIn)
	}
	return nil
}

// MarshalJSON encodes the token's metadata and never the access token,
// which reads "[REDACTED]": a Token encoded into a log line, a debug
// endpoint or an error body shows no secret. Durations are in seconds, as
// the token endpoint gives them.
func (t Token) MarshalJSON() ([]byte, error) {
	type tokenJSON struct {
		AccessToken  string    `json:"access_token"`
		TokenType    string    `json:"token_type"`
		ExpiresIn    int64     `json:"expires_in"`
		ExpiresAt    time.Time `json:"expires_at"`
		ExtExpiresIn int64     `json:"ext_expires_in,omitempty"`
		RefreshIn    int64     `json:"refresh_in,omitempty"`
	}
	accessToken := ""
	if t.AccessToken != "" {
		accessToken = redactionMask
	}
	return json.Marshal(tokenJSON{
		AccessToken:  accessToken,
		TokenType:    t.TokenType,
		ExpiresIn:    int64(t.ExpiresIn / time.Second),
		ExpiresAt:    t.ExpiresAt,
		ExtExpiresIn: int64(t.ExtExpiresIn / time.Second),
		RefreshIn:    int64(t.RefreshIn / time.Second),
	})
}

func (t Token) redactedToken() string {
	if t.AccessToken == "" {
		return `""`
	}
	return redactionMask
}
