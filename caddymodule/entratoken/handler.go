// Package entratoken is the entra_token HTTP handler: it injects the entra
// app's token for one application into each request on its way downstream.
package entratoken

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
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

// Results of requests_total besides the error codes answered.
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

var defaultPurgeOnStatus = []int{http.StatusUnauthorized}

// Handler injects an application's Entra ID token into each request: the
// next handler gets a copy in which every client copy of the header is
// replaced by "Bearer <token>"; the request the rest of the server reads
// keeps what the client sent. A request that may come from a web page is
// answered 403 MICROSOFT_REQUEST_NOT_LOCAL, TRACE and CONNECT 405, a path
// with a dot-segment 400, all before any token is looked up. Without a
// valid token it answers the error itself (502, or 503 with Retry-After).
//
// For an on-behalf-of application the user's bearer token is exchanged for
// one on the user's behalf and never goes downstream; a missing or refused
// one is answered 401 or 403 with a challenge the client can act on.
//
// A downstream status of purge_on_status (default 401) to a request that
// still carried the token purges it everywhere, once per token.
//
// The handler sets these placeholders:
//
// Placeholder | Description
// ------------|------------
// `{http.entra_token.application}` | The application name of the injected token
// `{http.entra_token.expires_at}` | When the injected token expires (RFC 3339)
type Handler struct {
	// Application is a configured application's name. Required.
	Application string `json:"application,omitempty"`

	// Header the token goes into, as "Bearer <token>"; hop-by-hop, framing
	// and X-Forwarded-* fields are refused. Default Authorization.
	Header string `json:"header,omitempty"`

	// PurgeOnStatus are the downstream statuses that purge the injected
	// token. Default [401]; empty disables purging.
	PurgeOnStatus *[]int `json:"purge_on_status,omitempty"`

	header        string
	purgeOnStatus []int
	app           *entraapp.App
	logger        *zap.Logger
	// injected saves the hot path a ~1 KiB header value per request (a
	// pointer: Caddy copies module values).
	injected      *atomic.Pointer[injection]
	injectedCount prometheus.Counter // requests_total{result="injected"}
	answersClaims bool               // see serveAnsweringClaims
	// The warnings a client or a downstream causes, one a minute each (per
	// answer status and code, so that 503s a flood of clients causes hide
	// no 502: *entraapp.RefusalLog by both): requests_total and
	// tokens_purged_total count them all.
	noTokenWarnings *sync.Map
	claimsWarnings  *entraapp.RefusalLog
	serverChecked   *atomic.Bool // see warnIfCredentialsLogged
}

// warn logs msg through limit, with the number of entries not logged
// since the last one.
func (h *Handler) warn(limit *entraapp.RefusalLog, msg string, fields ...zap.Field) {
	if ok, unlogged := limit.Allow(time.Now()); ok {
		h.logger.Warn(msg, append(fields, zap.Int64("unlogged_since_last", unlogged))...)
	}
}

// injection is what is derived from one token.
type injection struct {
	accessToken string
	headerValue string
	expiresAt   string
}

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
	h.noTokenWarnings, h.claimsWarnings = new(sync.Map), new(entraapp.RefusalLog)
	h.serverChecked = new(atomic.Bool)
	if h.Application == "" {
		return entraapp.ConfigError("entra_token", "an application name is required")
	}
	var err error
	if h.header, err = entraapp.CheckHeaderName("entra_token header", cmp.Or(h.Header, DefaultHeader)); err != nil {
		return err
	}
	if h.header != DefaultHeader {
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
	if _, onBehalfOf := h.app.UserTokenHeader(h.Application); onBehalfOf && h.PurgeOnStatus != nil {
		h.logger.Warn("purge_on_status does not apply to an on-behalf-of application: a token exchanged for a user "+
			"is dropped only when downstream answers a claims challenge (docs/on-behalf-of.md)",
			zap.String("application", h.Application))
	}
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
	if checked := h.serverChecked; checked != nil && !checked.Load() {
		h.warnIfCredentialsLogged(r)
	}
	if rejection := checkRequest(r); rejection != nil {
		requests.WithLabelValues(h.Application, rejection.result).Inc()
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "entra_token: "+rejection.message, rejection.status)
		return nil
	}
	if userHeader, ok := h.app.UserTokenHeader(h.Application); ok {
		return h.serveOnBehalfOf(w, r, next, userHeader)
	}
	credential, err := h.app.Token(r.Context(), h.Application)
	if err != nil {
		return h.writeError(w, r, err)
	}
	in := h.injectionFor(credential)
	proxied := withToken(r, h.header, in.headerValue)
	h.injectedInto(r, "token injected", in.expiresAt, credential)
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

// warnIfCredentialsLogged warns once, at the handler's first request, if
// its server has log_credentials on: Caddy's logs then show the tokens it
// otherwise redacts from Authorization, the injected one in reverse_proxy's
// debug log and the client's (on an on-behalf-of route, the user's token)
// in the access and error logs.
func (h *Handler) warnIfCredentialsLogged(r *http.Request) {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if h.serverChecked.Swap(true) || srv == nil || srv.Logs == nil || !srv.Logs.ShouldLogCredentials {
		return
	}
	h.logger.Warn("log_credentials is on for this server: Caddy's logs show the Authorization header, the injected "+
		"token in reverse_proxy's debug log and the client's (on an on-behalf-of route, the user's token) in the access "+
		"and error logs; turn it off, or delete those fields with a log filter (docs/entra_token.md, the header)",
		zap.String("application", h.Application))
}

// injectedInto counts an injection into r, sets its placeholders and
// debug-logs it as msg.
func (h *Handler) injectedInto(r *http.Request, msg, expiresAt string, credential tokencache.Record) {
	if counter := h.injectedCount; counter != nil {
		counter.Inc()
	} else { // a handler built without Provision
		requests.WithLabelValues(h.Application, resultInjected).Inc()
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.entra_token.application", h.Application)
		repl.Set("http.entra_token.expires_at", expiresAt)
	}
	if c := h.logger.Check(zapcore.DebugLevel, msg); c != nil {
		c.Write(zap.String("application", h.Application), zap.Time("expires_at", credential.AccessTokenExpiresAt))
	}
}

// downstreamStatus is the response's status, or err's.
func downstreamStatus(recorded int, err error) int {
	var handlerErr caddyhttp.HandlerError
	if err != nil && errors.As(err, &handlerErr) {
		return handlerErr.StatusCode
	}
	return recorded
}

// purgeIfRefused purges credential when downstream answered one of
// purge_on_status to proxied while it still carried it.
func (h *Handler) purgeIfRefused(r, proxied *http.Request, credential tokencache.Record, recorded int, err error) {
	status := downstreamStatus(recorded, err)
	if slices.Contains(h.purgeOnStatus, status) &&
		carriesToken(proxied, h.header, h.injectionFor(credential).headerValue) &&
		h.app.PurgeRejected(r.Context(), h.Application, credential.AccessToken) {
		purges.WithLabelValues(h.Application).Inc()
		h.logger.Warn("downstream refused the token; purged it so the next request gets a fresh one",
			zap.String("application", h.Application), zap.Int("status", status), zap.Time("expires_at", credential.AccessTokenExpiresAt))
	}
}

// InjectedApplication implements entraapp.Injector.
func (h *Handler) InjectedApplication() string { return h.Application }

var _ entraapp.Injector = (*Handler)(nil)

// writeError answers a token failure (entraapp.AnswerFor), or not at all
// when the client went away.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) error {
	if r.Context().Err() != nil {
		requests.WithLabelValues(h.Application, resultCanceled).Inc()
		return caddyhttp.Error(499, err)
	}
	answer := entraapp.AnswerFor(err)
	requests.WithLabelValues(h.Application, answer.Code).Inc()
	fields := []zap.Field{zap.String("application", h.Application), zap.String("code", answer.Code), zap.Int("status", answer.Status)}
	if answer.Status < 500 {
		h.logger.Debug("no token injected", fields...) // the client's own token refused: as common as its callers make it
	} else {
		var limit *entraapp.RefusalLog // nil: every one logged
		if h.noTokenWarnings != nil {
			l, _ := h.noTokenWarnings.LoadOrStore(fmt.Sprint(answer.Status, answer.Code), new(entraapp.RefusalLog))
			limit = l.(*entraapp.RefusalLog)
		}
		h.warn(limit, "no token injected", fields...)
	}
	return answer.Write(w)
}

// Interface guard; entraapp.Directive checks the handler's other interfaces.
var _ caddy.Provisioner = (*Handler)(nil)
