package entra

import (
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap/zapcore"
)

// Token is an access token issued by the token endpoint. Formatting it with
// fmt (any verb), logging it with zap or encoding it to JSON (a one-way
// summary) never shows AccessToken.
type Token struct {
	AccessToken string        // the bearer token itself
	TokenType   string        // always "Bearer", the only type accepted
	ExpiresIn   time.Duration // expires_in
	// ExpiresAt is when the request was sent plus ExpiresIn: conservative.
	ExpiresAt    time.Time
	ExtExpiresIn time.Duration // ext_expires_in (outage lifetime), 0 when absent or malformed
	RefreshIn    time.Duration // refresh_in, 0 when absent or malformed
}

// String returns a summary of the token without the access token.
func (t Token) String() string {
	return fmt.Sprintf("entra.Token{AccessToken:%s TokenType:%s ExpiresIn:%s ExpiresAt:%s ExtExpiresIn:%s RefreshIn:%s}",
		t.redactedToken(), t.TokenType, t.ExpiresIn, t.ExpiresAt.Format(time.RFC3339), t.ExtExpiresIn, t.RefreshIn)
}

// GoString is String: %#v must not show the access token either.
func (t Token) GoString() string { return t.String() }

// Format makes every fmt verb print String, so that none reaches the access
// token through reflection.
func (t Token) Format(f fmt.State, verb rune) {
	_, _ = f.Write([]byte(t.String()))
}

// MarshalLogObject lets zap log a Token without the access token.
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

// MarshalJSON encodes the token's metadata, durations in seconds, with the
// access token as "[REDACTED]".
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
