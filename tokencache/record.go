package tokencache

import (
	"context"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap/zapcore"
)

// redacted replaces an access token wherever a Record is printed.
const redacted = "[REDACTED]"

// Record is a cached token record, the value of Handle.Token. In the
// store it is JSON with the field names below and RFC 3339 times.
//
// fmt (%v, %+v, %#v, %s, %q) and zap (zap.Any, zap.Object) print it with the
// access token redacted; encoding/json does not, because the store needs it.
type Record struct {
	// ID is the record key (see RecordKey).
	ID string `json:"id"`
	// ApplicationName is the application's name (Application.Name of the
	// handle asked).
	ApplicationName string `json:"applicationName"`
	// AccessToken is the bearer token.
	AccessToken string `json:"accessToken"`
	// AccessTokenExpiresAt is when the token expires.
	AccessTokenExpiresAt time.Time `json:"accessTokenExpiresAt"`
	// Scope is the space-separated scopes.
	Scope string `json:"scope"`
	// CreatedAt is when the record was first written.
	CreatedAt time.Time `json:"createdAt"`
	// UpdatedAt is when the record was last refreshed.
	UpdatedAt time.Time `json:"updatedAt"`
}

// Fetched is what a FetchFunc returns: a token and when it expires.
type Fetched struct {
	AccessToken string
	ExpiresAt   time.Time
	// RefreshIn is when, after the fetch, the token endpoint advises
	// refreshing the token (Entra's refresh_in); 0 when it gave none, and
	// then Options.RefreshAhead decides. It is honoured by the replica that
	// fetched; replicas that take the record from the store use
	// RefreshAhead (the record format has no field for it).
	RefreshIn time.Duration
}

// FetchFunc requests a new token. Its errors must be safe to show a client
// (no secret, no token): the cache puts their text in Error.Message.
type FetchFunc func(ctx context.Context) (Fetched, error)

func (c Record) redactedToken() string {
	if c.AccessToken == "" {
		return ""
	}
	return redacted
}

// String formats the record like %v formats a struct, with the token redacted.
func (c Record) String() string {
	return fmt.Sprintf("{%s %s %s %s %s %s %s}", c.ID, c.ApplicationName, c.redactedToken(),
		c.AccessTokenExpiresAt.Format(time.RFC3339Nano), c.Scope,
		c.CreatedAt.Format(time.RFC3339Nano), c.UpdatedAt.Format(time.RFC3339Nano))
}

// GoString formats the record like %#v formats a struct, with the token redacted.
func (c Record) GoString() string {
	return fmt.Sprintf("tokencache.Record{ID:%q, ApplicationName:%q, AccessToken:%q, "+
		"AccessTokenExpiresAt:%q, Scope:%q, CreatedAt:%q, UpdatedAt:%q}",
		c.ID, c.ApplicationName, c.redactedToken(),
		c.AccessTokenExpiresAt.Format(time.RFC3339Nano), c.Scope,
		c.CreatedAt.Format(time.RFC3339Nano), c.UpdatedAt.Format(time.RFC3339Nano))
}

// Format implements fmt.Formatter so that no verb prints the token.
func (c Record) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, c.GoString())
	case verb == 'v' && f.Flag('+'):
		_, _ = fmt.Fprintf(f, "{ID:%s ApplicationName:%s AccessToken:%s AccessTokenExpiresAt:%s "+
			"Scope:%s CreatedAt:%s UpdatedAt:%s}", c.ID, c.ApplicationName, c.redactedToken(),
			c.AccessTokenExpiresAt.Format(time.RFC3339Nano), c.Scope,
			c.CreatedAt.Format(time.RFC3339Nano), c.UpdatedAt.Format(time.RFC3339Nano))
	case verb == 'q':
		_, _ = fmt.Fprintf(f, "%q", c.String())
	default:
		_, _ = io.WriteString(f, c.String())
	}
}

// MarshalLogObject implements zapcore.ObjectMarshaler so that zap.Any and
// zap.Object log the record without its token.
func (c Record) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("id", c.ID)
	enc.AddString("applicationName", c.ApplicationName)
	enc.AddString("accessToken", c.redactedToken())
	enc.AddTime("accessTokenExpiresAt", c.AccessTokenExpiresAt)
	enc.AddString("scope", c.Scope)
	enc.AddTime("createdAt", c.CreatedAt)
	enc.AddTime("updatedAt", c.UpdatedAt)
	return nil
}

// validFor reports whether the record has a token with more than window
// left at now.
func (c *Record) validFor(now time.Time, window time.Duration) bool {
	return c != nil && c.AccessToken != "" && c.AccessTokenExpiresAt.Sub(now) > window
}

var (
	_ fmt.Formatter           = Record{}
	_ fmt.Stringer            = Record{}
	_ fmt.GoStringer          = Record{}
	_ zapcore.ObjectMarshaler = Record{}
)
