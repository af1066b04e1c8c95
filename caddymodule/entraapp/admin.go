package entraapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

const (
	adminTimeout = 30 * time.Second // of a refresh or purge
	indented     = true             // the admin API answers people
)

// adminAPI is admin.api.entra, acting on the running entra app:
//
//	GET    /entra/tokens                      every application's token metadata
//	GET    /entra/tokens/<application>        one application's
//	POST   /entra/tokens/<application>/refresh fetch a new token now, fleet-wide
//	DELETE /entra/tokens/<application>        purge the token, fleet-wide
//
// It answers metadata only (tokenInfo), never a token or secret.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.entra",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the /entra/tokens routes.
func (api adminAPI) Routes() []caddy.AdminRoute {
	handler := caddy.AdminHandlerFunc(api.serveTokens)
	return []caddy.AdminRoute{
		{Pattern: "/entra/tokens", Handler: handler},
		{Pattern: "/entra/tokens/", Handler: handler},
	}
}

// serveTokens routes a request under /entra/tokens.
func (api adminAPI) serveTokens(w http.ResponseWriter, r *http.Request) error {
	app := runningApp.Load()
	if app == nil {
		return Answer{Status: http.StatusInternalServerError, Code: CodeProviderNotConfigured,
			Message: "no entra app is running (add an entra block to the global options)"}.write(w, indented)
	}
	// Escaped: a name holding "/" is given as %2F.
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.EscapedPath(), "/entra/tokens"), "/")
	if rest == "" {
		if !allowMethod(w, r, http.MethodGet) {
			return nil
		}
		infos := make([]tokenInfo, 0, len(app.Applications))
		for _, name := range app.ApplicationNames() {
			infos = append(infos, app.status(name))
		}
		return writeJSON(w, http.StatusOK, infos, indented)
	}
	escapedName, action, _ := strings.Cut(rest, "/")
	name, err := url.PathUnescape(escapedName)
	if _, ok := app.Applications[name]; !ok || err != nil {
		return Answer{Status: http.StatusNotFound, Code: CodeApplicationNotFound,
			Message: fmt.Sprintf("application %q is not configured (configured: %s)", name, app.configuredNames())}.write(w, indented)
	}
	methods := map[string][]string{"": {http.MethodGet, http.MethodDelete}, "refresh": {http.MethodPost}}[action]
	if methods == nil {
		return Answer{Status: http.StatusNotFound, Code: "NOT_FOUND", Message: "no such endpoint: " + r.URL.Path}.write(w, indented)
	}
	if !allowMethod(w, r, methods...) {
		return nil
	}
	if r.Method != http.MethodGet {
		// An on-behalf-of application has no handle: a token request of
		// its own would fail, and back off.
		h, ok := app.handle(name)
		if !ok {
			return Answer{Status: http.StatusConflict, Code: CodeOnBehalfOfApplication, Message: fmt.Sprintf("application %q "+
				"exchanges users' tokens (on_behalf_of): it has no token of its own to refresh or purge", name)}.write(w, indented)
		}
		ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
		defer cancel()
		if r.Method == http.MethodDelete && h.DeleteEverywhere(ctx) != nil {
			app.logger.Warn("purging a token through the admin API: the token store failed; only this replica dropped it",
				zap.String("application", name))
			return Answer{Status: http.StatusServiceUnavailable, Code: CodeTokenRequestFailed,
				Message:    fmt.Sprintf("application %q: this replica dropped its token, but the token store could not be reached; retry", name),
				RetryAfter: time.Second}.write(w, indented)
		}
		if r.Method == http.MethodPost {
			if _, err := h.Refresh(ctx); err != nil {
				answer := AnswerFor(err)
				if errors.Is(err, tokencache.ErrPaused) {
					answer.Status = http.StatusTooManyRequests // backoff refused to make the request
				}
				return answer.write(w, indented)
			}
		}
	}
	return writeJSON(w, http.StatusOK, app.status(name), indented)
}

// allowMethod reports whether r's method is one of methods, else answers 405.
func allowMethod(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	if slices.Contains(methods, r.Method) {
		return true
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	_ = Answer{Status: http.StatusMethodNotAllowed, Code: "METHOD_NOT_ALLOWED", Message: r.Method + " is not allowed here"}.write(w, indented)
	return false
}

// Interface guard
var _ caddy.AdminRouter = (*adminAPI)(nil)
