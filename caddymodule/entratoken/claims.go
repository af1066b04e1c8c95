package entratoken

import (
	"bytes"
	"encoding/base64"
	"maps"
	"net/http"
	"regexp"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// serveAnsweringClaims serves an application that declares client
// capabilities: a downstream claims challenge replaces the token by one
// with its claims, and a bodiless request is sent once more with it (one
// with a body gets the challenge). Other refusals purge as configured.
func (h *Handler) serveAnsweringClaims(w http.ResponseWriter, r, proxied *http.Request, next caddyhttp.Handler, credential tokencache.Record) error {
	before := w.Header().Clone()
	var buf bytes.Buffer
	recorder := caddyhttp.NewResponseRecorder(w, &buf, func(status int, header http.Header) bool {
		return status == http.StatusUnauthorized && isClaimsChallenge(header.Values("WWW-Authenticate"))
	})
	err := next.ServeHTTP(recorder, proxied)
	if err != nil || !recorder.Buffered() {
		h.purgeIfRefused(r, proxied, credential, recorder.Status(), err)
		return err
	}
	challenge, ok := challengeClaims(recorder.Header().Values("WWW-Authenticate"))
	if !ok {
		return recorder.WriteResponse()
	}
	fresh, refreshErr := h.app.RefreshForClaims(r.Context(), h.Application, challenge)
	if refreshErr != nil || fresh.AccessToken == credential.AccessToken {
		h.logger.Warn("downstream answered a claims challenge; no token satisfying it could be had",
			zap.String("application", h.Application), zap.NamedError("cause", refreshErr))
		return recorder.WriteResponse()
	}
	purges.WithLabelValues(h.Application).Inc()
	h.logger.Info("downstream answered a claims challenge; the token was replaced by one requested with its claims",
		zap.String("application", h.Application), zap.Bool("retried", bodiless(r)))
	if !bodiless(r) {
		return recorder.WriteResponse()
	}
	// Send it once more; the buffered answer and its headers are dropped.
	clear(w.Header())
	maps.Copy(w.Header(), before)
	return next.ServeHTTP(w, withToken(r, h.header, h.injectionFor(fresh).headerValue))
}

// bodiless reports whether r has no body (Caddy may wrap http.NoBody), so
// it can be sent again.
func bodiless(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 && len(r.TransferEncoding) == 0
}

var claimsParam = regexp.MustCompile(`(?i)(?:^|[\s,])claims\s*=\s*"([^"]*)"`)

// challengeClaims returns the claims JSON object of an insufficient_claims
// challenge (base64 in its claims parameter), if any.
func challengeClaims(challenges []string) (string, bool) {
	for _, c := range challenges {
		if !isClaimsChallenge([]string{c}) {
			continue
		}
		m := claimsParam.FindStringSubmatch(c)
		if m == nil {
			continue
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if raw, err := enc.DecodeString(m[1]); err == nil && bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
				return string(raw), true
			}
		}
	}
	return "", false
}
