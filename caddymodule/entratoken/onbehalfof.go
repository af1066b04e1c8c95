package entratoken

import (
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// serveOnBehalfOf replaces the user's bearer token in userHeader by the
// token exchanged for it; the user's token never goes downstream. A
// downstream claims challenge reaches the client as it is, and drops the
// exchanged token in every replica (at most once per user token every 10 s
// in this replica).
func (h *Handler) serveOnBehalfOf(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, userHeader string) error {
	userToken := bearerToken(r.Header, userHeader)
	// Consumed here: nothing after this handler sees it, nor Caddy's logs
	// (which mask only Authorization, Cookie and Proxy-Authorization).
	maps.DeleteFunc(r.Header, func(name string, _ []string) bool { return strings.EqualFold(name, userHeader) })
	credential, err := h.app.ExchangeUserToken(r.Context(), h.Application, userToken, "bearer token in "+userHeader)
	if err != nil {
		return h.writeError(w, r, err)
	}
	proxied := withToken(r, h.header, "Bearer "+credential.AccessToken, userHeader)
	expiresAt := credential.AccessTokenExpiresAt.UTC().Format(time.RFC3339)
	h.injectedInto(r, "token injected on the user's behalf", expiresAt, credential)
	recorder := caddyhttp.NewResponseRecorder(w, nil, nil)
	err = next.ServeHTTP(recorder, proxied)
	if downstreamStatus(recorder.Status(), err) == http.StatusUnauthorized &&
		isClaimsChallenge(recorder.Header().Values("WWW-Authenticate")) {
		if h.app.DropExchanged(r.Context(), h.Application, userToken, credential.AccessToken) {
			purges.WithLabelValues(h.Application).Inc()
			h.logger.Info("downstream answered a claims challenge; dropped the token exchanged for the user's token",
				zap.String("application", h.Application))
		} else if c := h.logger.Check(zap.DebugLevel, "downstream answered a claims challenge; kept the token exchanged for the user's token, dropped too recently or already replaced"); c != nil {
			c.Write(zap.String("application", h.Application))
		}
	}
	return err
}

// bearerToken returns the token of header's one "Bearer <token>" value, or "".
func bearerToken(header http.Header, name string) string {
	values := header.Values(name)
	if len(values) != 1 {
		return ""
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return ""
	}
	return token
}

// isClaimsChallenge reports whether a WWW-Authenticate carries
// error="insufficient_claims" (a revoked token, or a policy changed).
func isClaimsChallenge(challenges []string) bool {
	for _, c := range challenges {
		if strings.Contains(strings.ToLower(c), `error="insufficient_claims"`) {
			return true
		}
	}
	return false
}
