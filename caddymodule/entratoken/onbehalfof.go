package entratoken

import (
	"errors"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// serveOnBehalfOf serves a request of an on-behalf-of application: the
// user's bearer token in userHeader is exchanged (or found in the cache)
// for the application's token on the user's behalf, which replaces it.
// The user's token never goes downstream: userHeader is removed from the
// request handed on (and its trailers), whatever header the token goes
// into. A downstream 401 carrying a claims challenge (continuous access
// evaluation) reaches the client as it is, and the exchanged token is
// dropped in every replica.
func (h *Handler) serveOnBehalfOf(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, userHeader string) error {
	userToken := bearerToken(r.Header, userHeader)
	// The user's token is consumed here: nothing after this handler sees
	// it, neither the downstream request nor Caddy's access and error logs
	// (which mask only Authorization, Cookie and Proxy-Authorization),
	// placeholders, respond or error routes.
	maps.DeleteFunc(r.Header, func(name string, _ []string) bool { return strings.EqualFold(name, userHeader) })
	credential, err := h.app.ExchangeUserToken(r.Context(), h.Application, userToken)
	if err != nil {
		return h.writeError(w, r, err)
	}
	h.countInjected()
	proxied := withToken(r, h.header, "Bearer "+credential.AccessToken)
	if userHeader != h.header {
		maps.DeleteFunc(proxied.Header, func(name string, _ []string) bool { return strings.EqualFold(name, userHeader) })
		if proxied.Trailer != nil {
			proxied.Trailer = withoutCredentials(proxied.Trailer, userHeader)
		}
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.entra_token.application", h.Application)
		repl.Set("http.entra_token.expires_at", credential.AccessTokenExpiresAt.UTC().Format(time.RFC3339))
	}
	if c := h.logger.Check(zapcore.DebugLevel, "token injected on the user's behalf"); c != nil {
		c.Write(zap.String("application", h.Application), zap.Time("expires_at", credential.AccessTokenExpiresAt))
	}
	recorder := caddyhttp.NewResponseRecorder(w, nil, nil)
	err = next.ServeHTTP(recorder, proxied)
	status := recorder.Status()
	var handlerErr caddyhttp.HandlerError
	if err != nil && errors.As(err, &handlerErr) {
		status = handlerErr.StatusCode
	}
	if status == http.StatusUnauthorized && isClaimsChallenge(recorder.Header().Values("WWW-Authenticate")) {
		h.app.DropExchanged(r.Context(), h.Application, userToken)
		purges.WithLabelValues(h.Application).Inc()
		h.logger.Info("downstream answered a claims challenge; dropped the token exchanged for the user's token",
			zap.String("application", h.Application))
	}
	return err
}

// bearerToken returns the token of the one "Bearer <token>" value of
// header, "" when there is none, several, or another scheme.
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
// error="insufficient_claims": a resource's demand of more claims
// (continuous access evaluation revoked the token, or a policy changed).
func isClaimsChallenge(challenges []string) bool {
	for _, c := range challenges {
		if strings.Contains(strings.ToLower(c), `error="insufficient_claims"`) {
			return true
		}
	}
	return false
}
