package entra

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// userAgent identifies the client to the token endpoint.
const userAgent = "caddy-entra"

// Client requests client-credentials tokens for one identity. Make it with
// NewClient. It holds no token state and is safe for concurrent use.
type Client struct {
	cfg           Config // validated, defaults applied
	tokenEndpoint string
	now           func() time.Time // replaced in tests
}

// TokenEndpoint returns the resolved token endpoint URL:
// {authority_host}/{tenant_id}/oauth2/v2.0/token, or Config.TokenEndpoint.
func (c *Client) TokenEndpoint() string { return c.tokenEndpoint }

// TenantID returns the configured tenant ID ("" when only a token endpoint
// was configured).
func (c *Client) TenantID() string { return c.cfg.TenantID }

// ClientID returns the configured client ID.
func (c *Client) ClientID() string { return c.cfg.ClientID }

// Token requests an access token for scopes (for Entra, one
// "{resource}/.default" scope): a form-encoded POST of client_id,
// client_secret, scope (space-separated) and grant_type=client_credentials.
//
// The request is bounded by Config.Timeout on top of ctx. At most
// MaxResponseBytes of the response are read. Every failure is a
// *RequestError; its Err wraps context.DeadlineExceeded or
// context.Canceled when the request was cut short.
func (c *Client) Token(ctx context.Context, scopes []string) (*Token, error) {
	scope := joinScopes(scopes)
	if scope == "" {
		return nil, &RequestError{Err: ErrNoScope}
	}

	form := url.Values{
		"client_id":     {c.cfg.ClientID},
		"client_secret": {c.cfg.ClientSecret},
		"scope":         {scope},
		"grant_type":    {"client_credentials"},
	}
	reqCtx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, c.tokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		// The endpoint was validated by NewClient; this is not expected.
		return nil, &RequestError{Err: fmt.Errorf("building request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)

	sentAt := c.now()
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, reqCtx, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		reqErr := errorFromFields(resp.StatusCode, resp.Header, nil)
		reqErr.Err = c.transportError(ctx, reqCtx, fmt.Errorf("reading response: %w", err)).Err
		return nil, reqErr
	}
	if len(body) > MaxResponseBytes {
		reqErr := errorFromFields(resp.StatusCode, resp.Header, nil)
		reqErr.Err = ErrResponseTooLarge
		return nil, reqErr
	}

	token, err := ParseTokenResponse(resp.StatusCode, resp.Header, body, sentAt)
	if err != nil {
		var reqErr *RequestError
		if errors.As(err, &reqErr) {
			reqErr.redact(c.cfg.ClientSecret)
		}
		return nil, err
	}
	return token, nil
}

// transportError wraps a failure to get a response. The *url.Error from
// net/http names the method and URL (which holds no secret: NewClient rejects
// user information) but never the form body. When Config.Timeout (not the
// caller's context) cut the request short, the message says so.
func (c *Client) transportError(callerCtx, reqCtx context.Context, err error) *RequestError {
	if callerCtx.Err() == nil && errors.Is(reqCtx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s: %w", c.cfg.Timeout, err)
	}
	return &RequestError{Err: err}
}

// joinScopes joins the non-blank scopes with single spaces.
func joinScopes(scopes []string) string {
	kept := make([]string, 0, len(scopes))
	for _, s := range scopes {
		if s = strings.TrimSpace(s); s != "" {
			kept = append(kept, s)
		}
	}
	return strings.Join(kept, " ")
}
