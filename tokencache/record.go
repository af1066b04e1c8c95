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

// Record is a cached token record, the value of Handle.Token; in the store,
// JSON as tagged. fmt and zap print it with the access token redacted;
// encoding/json does not, because the store needs it.
type Record struct {
	ID                   string    `json:"id"`              // the record key (see RecordKey)
	ApplicationName      string    `json:"applicationName"` // Application.Name of the handle asked
	AccessToken          string    `json:"accessToken"`     // the bearer token
	AccessTokenExpiresAt time.Time `json:"accessTokenExpiresAt"`
	Scope                string    `json:"scope"`     // space-separated
	CreatedAt            time.Time `json:"createdAt"` // first written
	UpdatedAt            time.Time `json:"updatedAt"` // last refreshed
}

// Fetched is what a FetchFunc returns: a token and when it expires.
type Fetched struct {
	AccessToken string
	ExpiresAt   time.Time
	// RefreshIn is when the endpoint advises refreshing (Entra's
	// refresh_in), 0 for none (then RefreshAhead decides). Only the
	// fetching replica knows it: the record has no field for it.
	RefreshIn time.Duration
}

// FetchFunc requests a new token. Its errors must be safe to show a client
// (no secret, no token): they become Error.Message.
type FetchFunc func(ctx context.Context) (Fetched, error)

func (c Record) redactedToken() string {
	if c.AccessToken == "" {
		return ""
	}
	return redacted
}

// printed returns the fields as fmt shows them, the token redacted.
func (c Record) printed() []any {
	return []any{c.ID, c.ApplicationName, c.redactedToken(),
		c.AccessTokenExpiresAt.Format(time.RFC3339Nano), c.Scope,
		c.CreatedAt.Format(time.RFC3339Nano), c.UpdatedAt.Format(time.RFC3339Nano)}
}

// String formats the record as %v does a struct, with the token redacted.
func (c Record) String() string { return fmt.Sprintf("{%s %s %s %s %s %s %s}", c.printed()...) }

// GoString formats the record as %#v does, with the token redacted.
func (c Record) GoString() string {
	return fmt.Sprintf("tokencache.Record{ID:%q, ApplicationName:%q, AccessToken:%q, "+
		"AccessTokenExpiresAt:%q, Scope:%q, CreatedAt:%q, UpdatedAt:%q}", c.printed()...)
}

// Format implements fmt.Formatter so that no verb prints the token.
func (c Record) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, c.GoString())
	case verb == 'v' && f.Flag('+'):
		_, _ = fmt.Fprintf(f, "{ID:%s ApplicationName:%s AccessToken:%s AccessTokenExpiresAt:%s "+
			"Scope:%s CreatedAt:%s UpdatedAt:%s}", c.printed()...)
	case verb == 'q':
		_, _ = fmt.Fprintf(f, "%q", c.String())
	default:
		_, _ = io.WriteString(f, c.String())
	}
}

// MarshalLogObject logs the record for zap without its token.
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

// validFor reports whether the record has a token with more than window left.
func (c *Record) validFor(now time.Time, window time.Duration) bool {
	return c != nil && c.AccessToken != "" && c.AccessTokenExpiresAt.Sub(now) > window
}

var (
	_ fmt.Formatter           = Record{}
	_ fmt.Stringer            = Record{}
	_ fmt.GoStringer          = Record{}
	_ zapcore.ObjectMarshaler = Record{}
)
