package entratoken

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"maps"
	"net"
	"net/http"
	"regexp"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// serveAnsweringClaims serves an application that declares client
// capabilities: a downstream claims challenge replaces the token by one
// with its claims, and a bodiless request is sent once more with it (one
// with a body gets the challenge). Other refusals, a challenge without
// claims it can read, and a refusal of the request sent again (other than
// a challenge) purge as configured.
func (h *Handler) serveAnsweringClaims(w http.ResponseWriter, r, proxied *http.Request, next caddyhttp.Handler, credential tokencache.Record) error {
	before := w.Header().Clone()
	recorder := &heldChallenge{w: w, ResponseRecorder: caddyhttp.NewResponseRecorder(w, new(bytes.Buffer), func(status int, header http.Header) bool {
		return status == http.StatusUnauthorized && isClaimsChallenge(header.Values("WWW-Authenticate"))
	})}
	err := next.ServeHTTP(recorder, proxied)
	if err != nil || !recorder.Buffered() {
		h.purgeIfRefused(r, proxied, credential, recorder.Status(), err)
		return err
	}
	challenge, ok := challengeClaims(recorder.Header().Values("WWW-Authenticate"))
	if !ok {
		h.purgeIfRefused(r, proxied, credential, recorder.Status(), nil)
		return recorder.WriteResponse()
	}
	fresh, refreshErr := h.app.RefreshForClaims(r.Context(), h.Application, challenge)
	if refreshErr != nil || fresh.AccessToken == credential.AccessToken {
		h.warn(h.claimsWarnings, "downstream answered a claims challenge; no token satisfying it could be had",
			zap.String("application", h.Application), zap.NamedError("cause", refreshErr))
		return recorder.WriteResponse()
	}
	purges.WithLabelValues(h.Application).Inc()
	h.logger.Info("downstream answered a claims challenge; the token was replaced by one requested with its claims",
		zap.String("application", h.Application), zap.Bool("retried", bodiless(r) && !recorder.spilled))
	if !bodiless(r) || recorder.spilled {
		return recorder.WriteResponse()
	}
	// Send it once more; the buffered answer and its headers are dropped.
	clear(w.Header())
	maps.Copy(w.Header(), before)
	again := withToken(r, h.header, h.injectionFor(fresh).headerValue)
	retried := caddyhttp.NewResponseRecorder(w, nil, nil)
	err = next.ServeHTTP(retried, again)
	if !isClaimsChallenge(retried.Header().Values("WWW-Authenticate")) { // else the new token stays: it has the claims
		h.purgeIfRefused(r, again, fresh, retried.Status(), err)
	}
	return err
}

// bodiless reports whether r has no body (Caddy may wrap http.NoBody), so
// it can be sent again.
func bodiless(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 && len(r.TransferEncoding) == 0
}

var claimsParam = regexp.MustCompile(`(?i)(?:^|[\s,])claims\s*=\s*"([^"]*)"`)

// maxChallengeClaimsBytes bounds the claims a downstream may have asked
// for (Graph's are under a hundred bytes): longer ones are not sent to the
// token endpoint, and the challenge is passed on as one without claims.
const maxChallengeClaimsBytes = 4 << 10

// challengeClaims returns the claims JSON object of an insufficient_claims
// challenge (base64 in its claims parameter), if any, of at most
// maxChallengeClaimsBytes.
func challengeClaims(challenges []string) (string, bool) {
	for _, c := range challenges {
		if !isClaimsChallenge([]string{c}) {
			continue
		}
		m := claimsParam.FindStringSubmatch(c)
		if m == nil || len(m[1]) > base64.StdEncoding.EncodedLen(maxChallengeClaimsBytes) {
			continue
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if raw, err := enc.DecodeString(m[1]); err == nil && len(raw) <= maxChallengeClaimsBytes && bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
				return string(raw), true
			}
		}
	}
	return "", false
}

// maxHeldChallengeBytes bounds the body of a claims challenge held back to
// be answered: Graph's are a few hundred bytes. A longer one goes on to the
// client as it comes, and only the token is replaced (the request is not
// sent again).
const maxHeldChallengeBytes = 64 << 10

// heldChallenge is the recorder of serveAnsweringClaims: it holds back a
// claims challenge, at most maxHeldChallengeBytes of it, and passes on
// everything else.
type heldChallenge struct {
	caddyhttp.ResponseRecorder
	w       http.ResponseWriter
	spilled bool // the challenge outgrew the bound and went on to w
}

func (c *heldChallenge) Write(p []byte) (int, error) {
	if c.spilled {
		return c.w.Write(p)
	}
	n, err := c.ResponseRecorder.Write(p)
	if err == nil && c.Buffered() && c.Buffer().Len() > maxHeldChallengeBytes {
		c.spilled = true
		err = c.ResponseRecorder.WriteResponse()
	}
	return n, err
}

// ReadFrom copies through Write, which bounds what is held.
func (c *heldChallenge) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{c}, r)
}

// WriteResponse writes a challenge still held.
func (c *heldChallenge) WriteResponse() error {
	if c.spilled {
		return nil
	}
	return c.ResponseRecorder.WriteResponse()
}

// FlushError flushes what was passed on; a held challenge is not.
func (c *heldChallenge) FlushError() error {
	if c.spilled {
		return http.NewResponseController(c.w).Flush()
	}
	return http.NewResponseController(c.ResponseRecorder).Flush()
}

// Push and Hijack are the recorder's, for handlers after entra_token that
// assert http.Pusher or http.Hijacker (Caddy's push does).
func (c *heldChallenge) Push(target string, opts *http.PushOptions) error {
	if p, ok := c.ResponseRecorder.(http.Pusher); ok {
		return p.Push(target, opts)
	}
	return http.ErrNotSupported
}

func (c *heldChallenge) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(c.ResponseRecorder).Hijack()
}

// Unwrap gives http.ResponseController the recorder's other abilities.
func (c *heldChallenge) Unwrap() http.ResponseWriter { return c.ResponseRecorder }

var (
	_ http.Pusher   = (*heldChallenge)(nil)
	_ http.Hijacker = (*heldChallenge)(nil)
)
