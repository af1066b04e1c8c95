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

// serveAnsweringClaims hands proxied to next for an application that
// declares client capabilities (continuous access evaluation). When
// downstream answers 401 with an insufficient_claims challenge, the token
// is replaced by one requested with the challenge's claims (one token
// request for the fleet, announced to every replica) and a request without
// a body is sent once more with it; a request with a body gets the
// challenge, and its client's next request the new token. Other refusals
// purge as purge_on_status says.
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
	// Send it once more with the new token; the first answer (buffered,
	// its headers set on w) is dropped.
	clear(w.Header())
	maps.Copy(w.Header(), before)
	return next.ServeHTTP(w, withToken(r, h.header, h.injectionFor(fresh).headerValue))
}

// bodiless reports whether r has no body, so that it can be sent again: a
// length of 0 and no transfer coding (net/http's reading of a request
// without one; Caddy may have wrapped its http.NoBody).
func bodiless(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 && len(r.TransferEncoding) == 0
}

// claimsParam finds a challenge's claims="..." parameter.
var claimsParam = regexp.MustCompile(`(?i)(?:^|[\s,])claims\s*=\s*"([^"]*)"`)

// challengeClaims returns the claims JSON of an insufficient_claims
// challenge (base64 in the claims parameter, as Entra-protected resources
// send it), and whether there was one that decodes to a JSON object.
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
