// Package entratoken is the entra_token HTTP handler: it injects the entra
// app's token for one application into each request on its way downstream.
package entratoken

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Results of requests_total besides the error codes answered: the request
// got its token, or its client left before it did.
const (
	resultInjected = "injected"
	resultCanceled = "canceled"
)

// The handler's collectors, beside the app's (see entraapp.RegisterMetrics).
var (
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "entra", Name: "requests_total",
		Help: "Requests through entra_token, by application and result: injected, or the error code answered.",
	}, []string{"application", "result"})
	purges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "entra", Name: "tokens_purged_total",
		Help: "Tokens purged because downstream refused them (purge_on_status), by application.",
	}, []string{"application"})
)

// DefaultHeader is the header the token is injected into by default.
const DefaultHeader = "Authorization"

// defaultPurgeOnStatus: a downstream 401 means the token was refused.
var defaultPurgeOnStatus = []int{http.StatusUnauthorized}

// Handler injects an Entra ID access token for one application into each
// request: it hands the next handler a copy of the request in which every
// copy of the header the client sent (in the header, in Connection options,
// in trailers) is replaced by "Bearer <token>". The request the rest of the
// server reads (placeholders, deferred header operations, respond, error
// routes) keeps what the client sent, so only the proxied request carries
// the token. A request a web page may have sent is answered 403 with
// {"code": "MICROSOFT_REQUEST_NOT_LOCAL", "message": "..."}: one whose Host
// is not an IP address, localhost, *.localhost or a name of the entra app's
// hosts option (DNS rebinding), or that carries Origin or Sec-Fetch-Site
// cross-site or same-site. TRACE and CONNECT are answered 405, and a path
// with a dot-segment (plain or encoded; see hasDotSegment) 400. All are
// answered before any token is looked up. When no valid token can be
// had it answers itself, with the error's status (502, or 503 with
// Retry-After while the token endpoint is throttling) and a JSON body
// {"code": "...", "message": "..."}, and does not call the next handler.
//
// For an on-behalf-of application (on_behalf_of in its block), the token is
// the user's bearer token in the application's on_behalf_of header,
// checked locally and exchanged (or found in the cache) for a token on the
// user's behalf; the user's token never goes downstream. A request whose
// token is missing or refused is answered 401 or 403 with a
// WWW-Authenticate challenge the user's client can act on
// (MICROSOFT_USER_TOKEN_MISSING, MICROSOFT_USER_TOKEN_INVALID,
// MICROSOFT_INTERACTION_REQUIRED, MICROSOFT_CONSENT_REQUIRED); a downstream
// 401 with a claims challenge reaches the client untouched and drops the
// exchanged token in every replica.
//
// When downstream answers with a status of purge_on_status (default 401) to
// a request that still carried the token, the token is dropped from the
// cache (in this replica and in Redis), at most once per token, so that the
// next request gets a fresh one.
//
// The handler sets these placeholders:
//
// Placeholder | Description
// ------------|------------
// `{http.entra_token.application}` | The application name of the injected token
// `{http.entra_token.expires_at}` | When the injected token expires (RFC 3339)
type Handler struct {
	// Application is the name of a configured application of the entra app.
	// Required.
	Application string `json:"application,omitempty"`

	// Header is the request header the token goes into, as
	// "Bearer <token>". Hop-by-hop and framing fields (Connection,
	// Proxy-Authorization, Host, Content-Length...) and the X-Forwarded-*
	// fields are refused. Default Authorization.
	Header string `json:"header,omitempty"`

	// PurgeOnStatus lists the downstream statuses that make the handler
	// purge the token it injected. Default [401]; an empty list disables
	// purging.
	PurgeOnStatus *[]int `json:"purge_on_status,omitempty"`

	header        string
	purgeOnStatus []int
	app           *entraapp.App
	logger        *zap.Logger
	// injected caches what is derived from the current token, so that the
	// hot path does not build a ~1 KiB header value per request.
	// A pointer: Caddy copies module values before provisioning.
	injected *atomic.Pointer[injection]
	// injectedCount is this handler's requests_total{result="injected"}.
	injectedCount prometheus.Counter
	// answersClaims: the application declares client capabilities, so
	// downstream claims challenges are answered (see serveAnsweringClaims).
	answersClaims bool
}

// injection is the header value and expiry placeholder of one token.
type injection struct {
	accessToken string
	headerValue string
	expiresAt   string
}

// injectionFor returns the injection of credential, reusing the last one
// while the token is the same.
func (h *Handler) injectionFor(credential tokencache.Record) *injection {
	if h.injected != nil {
		if in := h.injected.Load(); in != nil && in.accessToken == credential.AccessToken {
			return in
		}
	}
	in := &injection{
		accessToken: credential.AccessToken,
		headerValue: "Bearer " + credential.AccessToken,
		expiresAt:   credential.AccessTokenExpiresAt.UTC().Format(time.RFC3339),
	}
	if h.injected != nil {
		h.injected.Store(in)
	}
	return in
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.entra_token",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the entra app and checks that it knows the application.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.injected = new(atomic.Pointer[injection])
	if h.Application == "" {
		return entraapp.ConfigError("entra_token", "an application name is required")
	}
	var err error
	if h.header, err = entraapp.CheckHeaderName("entra_token header", cmp.Or(h.Header, DefaultHeader)); err != nil {
		return err
	}
	if h.header != DefaultHeader {
		// Caddy's logs redact Authorization, Cookie and Proxy-Authorization
		// only: reverse_proxy's debug log would show this header's token.
		h.logger.Warn("the injected header is not redacted in Caddy's logs: keep debug logging off for this "+
			"server or delete the field with a log filter (docs/entra_token.md, the header)",
			zap.String("application", h.Application), zap.String("header", h.header))
	}
	h.purgeOnStatus = defaultPurgeOnStatus
	if h.PurgeOnStatus != nil {
		h.purgeOnStatus = *h.PurgeOnStatus
	}
	for _, status := range h.purgeOnStatus {
		if status < 400 || status > 599 {
			return entraapp.ConfigError("entra_token purge_on_status", fmt.Sprintf("%d: only error statuses (400-599) can mean a refused token", status))
		}
	}
	if h.app, err = entraapp.FromContext(ctx, "entra_token "+h.Application, requests, purges); err != nil {
		return err
	}
	if err := h.app.RequireApplication("entra_token", h.Application); err != nil {
		return err
	}
	// Only a configured application gets a metric series.
	h.injectedCount = requests.WithLabelValues(h.Application, resultInjected)
	h.answersClaims = h.app.DeclaresCapabilities(h.Application)
	return nil
}

// ServeHTTP injects the token and calls next, or answers the error itself.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if reason := h.app.NotLocal(r); reason != "" {
		requests.WithLabelValues(h.Application, entraapp.CodeRequestNotLocal).Inc()
		return h.app.RefuseNotLocal(w, r, h.logger, "entra_token", reason)
	}
	if rejection := checkRequest(r); rejection != nil {
		return writeRejection(w, rejection)
	}
	if userHeader, ok := h.app.UserTokenHeader(h.Application); ok {
		return h.serveOnBehalfOf(w, r, next, userHeader)
	}
	credential, err := h.app.Token(r.Context(), h.Application)
	if err != nil {
		return h.writeError(w, r, err)
	}
	h.countInjected()
	in := h.injectionFor(credential)
	proxied := withToken(r, h.header, in.headerValue)

	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.entra_token.application", h.Application)
		repl.Set("http.entra_token.expires_at", in.expiresAt)
	}
	if c := h.logger.Check(zapcore.DebugLevel, "token injected"); c != nil {
		c.Write(zap.String("application", h.Application), zap.Time("expires_at", credential.AccessTokenExpiresAt))
	}
	if h.answersClaims {
		return h.serveAnsweringClaims(w, r, proxied, next, credential)
	}
	if len(h.purgeOnStatus) == 0 {
		return next.ServeHTTP(w, proxied)
	}
	recorder := caddyhttp.NewResponseRecorder(w, nil, nil)
	err = next.ServeHTTP(recorder, proxied)
	h.purgeIfRefused(r, proxied, credential, recorder.Status(), err)
	return err
}

// purgeIfRefused purges credential when downstream answered one of
// purge_on_status (status, or err's) to proxied, which still carried it.
func (h *Handler) purgeIfRefused(r, proxied *http.Request, credential tokencache.Record, status int, err error) {
	var handlerErr caddyhttp.HandlerError
	if err != nil && errors.As(err, &handlerErr) {
		status = handlerErr.StatusCode
	}
	if slices.Contains(h.purgeOnStatus, status) && carriesToken(proxied, h.header, h.injectionFor(credential).headerValue) {
		h.purge(r, credential, status)
	}
}

// InjectedApplication is the application whose token h injects.
func (h *Handler) InjectedApplication() string { return h.Application }

var _ entraapp.Injector = (*Handler)(nil)

// countInjected counts a request that got its token, through the counter
// Provision looked up once (a handler built without Provision looks it up
// each time).
func (h *Handler) countInjected() {
	if counter := h.injectedCount; counter != nil {
		counter.Inc()
		return
	}
	requests.WithLabelValues(h.Application, resultInjected).Inc()
}

// purge drops a token that downstream refused.
func (h *Handler) purge(r *http.Request, credential tokencache.Record, status int) {
	if h.app.PurgeRejected(r.Context(), h.Application, credential.AccessToken) {
		purges.WithLabelValues(h.Application).Inc()
		h.logger.Warn("downstream refused the token; purged it so the next request gets a fresh one",
			zap.String("application", h.Application), zap.Int("status", status), zap.Time("expires_at", credential.AccessTokenExpiresAt))
	}
}

// writeError answers a token failure with its code, status and
// Retry-After (see entraapp.AnswerFor), or not at all when the client went away.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) error {
	if r.Context().Err() != nil {
		// The client went away; there is nobody to answer.
		requests.WithLabelValues(h.Application, resultCanceled).Inc()
		return caddyhttp.Error(499, err)
	}
	answer := entraapp.AnswerFor(err)
	requests.WithLabelValues(h.Application, answer.Code).Inc()
	level := zapcore.WarnLevel
	if answer.Status < 500 {
		level = zapcore.DebugLevel // the client's own token refused: as common as its callers make it
	}
	if c := h.logger.Check(level, "no token injected"); c != nil {
		c.Write(zap.String("application", h.Application), zap.String("code", answer.Code), zap.Int("status", answer.Status))
	}
	return answer.Write(w)
}

// Interface guard; entraapp.Directive checks the handler's other interfaces.
var _ caddy.Provisioner = (*Handler)(nil)
