// Package entraready is the entra_ready HTTP handler: it answers readiness
// and startup probes from the entra app's tokens.
package entraready

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
)

func init() {
	caddy.RegisterModule(Ready{})
}

// probes is the handler's collector, beside the app's (see
// entraapp.RegisterMetrics).
var probes = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "caddy", Subsystem: "entra", Name: "ready_probes_total",
	Help: "Requests answered by entra_ready, by result: ready, not_ready, or MICROSOFT_REQUEST_NOT_LOCAL (refused: it may come from a web page).",
}, []string{"result"})

// Ready answers probes: 200 while every named application holds a usable
// token, else 503 (with Retry-After when the backoff tells). It gets each
// token as a request would, so probes make no more token requests than
// traffic. A loopback peer gets each application's state; any other (a
// kubelet) only {"ready": true|false}. A web page's request is refused as
// entra_token refuses it. No token or secret is ever answered.
type Ready struct {
	// Applications that must hold a token. Default: all but on-behalf-of ones.
	Applications []string `json:"applications,omitempty"`

	app    *entraapp.App
	names  []string
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Ready) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.entra_ready",
		New: func() caddy.Module { return new(Ready) },
	}
}

// Provision finds the entra app and checks the application names.
func (r *Ready) Provision(ctx caddy.Context) error {
	var err error
	if r.app, err = entraapp.FromContext(ctx, "entra_ready", probes); err != nil {
		return err
	}
	r.logger = ctx.Logger()
	return r.resolveNames()
}

func (r *Ready) resolveNames() error {
	if len(r.Applications) == 0 {
		r.names = slices.DeleteFunc(r.app.ApplicationNames(), func(name string) bool {
			_, onBehalfOf := r.app.UserTokenHeader(name)
			return onBehalfOf
		})
		return nil
	}
	for _, name := range r.Applications {
		if err := r.app.RequireApplication("entra_ready", name); err != nil {
			return err
		}
		if _, onBehalfOf := r.app.UserTokenHeader(name); onBehalfOf {
			return entraapp.ConfigError("entra_ready", fmt.Sprintf("application %q exchanges users' tokens (on_behalf_of): "+
				"it has no token of its own to be ready with", name))
		}
	}
	r.names = r.Applications
	return nil
}

type readyBody struct {
	Ready        bool                         `json:"ready"`
	Applications map[string]*readyApplication `json:"applications"`
}

type readyApplication struct {
	Ready                bool       `json:"ready"`
	AccessTokenExpiresAt *time.Time `json:"accessTokenExpiresAt,omitempty"`
	Code                 string     `json:"code,omitempty"` // the last failure's
	entraapp.ErrorInfo

	retryAfter time.Duration
}

// ServeHTTP answers the probe; next is never called.
func (r *Ready) ServeHTTP(w http.ResponseWriter, req *http.Request, _ caddyhttp.Handler) error {
	if reason := r.app.NotLocal(req); reason != "" {
		probes.WithLabelValues(entraapp.CodeRequestNotLocal).Inc()
		return r.app.RefuseNotLocal(w, req, r.logger, "entra_ready", reason)
	}
	body := readyBody{Ready: true, Applications: make(map[string]*readyApplication, len(r.names))}
	results := make([]*readyApplication, len(r.names))
	var wg sync.WaitGroup
	for i, name := range r.names {
		wg.Go(func() { results[i] = r.check(req, name) })
	}
	wg.Wait()
	var retryAfter time.Duration
	for i, name := range r.names {
		body.Applications[name] = results[i]
		if !results[i].Ready {
			body.Ready = false
			retryAfter = max(retryAfter, results[i].retryAfter)
		}
	}
	status, result := http.StatusOK, "ready"
	if !body.Ready {
		status, result = http.StatusServiceUnavailable, "not_ready"
		entraapp.SetRetryAfter(w.Header(), retryAfter)
	}
	probes.WithLabelValues(result).Inc()
	if !entraapp.IsLocalPeer(req) { // the applications' names, expiries and errors are for this machine only
		return entraapp.WriteJSON(w, status, map[string]bool{"ready": body.Ready})
	}
	return entraapp.WriteJSON(w, status, body)
}

func (r *Ready) check(req *http.Request, name string) *readyApplication {
	credential, err := r.app.Token(req.Context(), name)
	if err == nil {
		expiresAt := credential.AccessTokenExpiresAt.UTC()
		return &readyApplication{Ready: true, AccessTokenExpiresAt: &expiresAt}
	}
	answer := entraapp.AnswerFor(err)
	result := &readyApplication{Code: answer.Code, ErrorInfo: entraapp.ErrorInfoOf(err), retryAfter: answer.RetryAfter}
	if f := r.app.LastFailure(name); f != nil && f.Active {
		result.retryAfter = cmp.Or(result.retryAfter, time.Until(f.Until))
		if result.Error == "" {
			result.ErrorInfo = entraapp.ErrorInfoOf(f.Err)
		}
	}
	return result
}

// Interface guard; entraapp.Directive checks the handler's other interfaces.
var _ caddy.Provisioner = (*Ready)(nil)
