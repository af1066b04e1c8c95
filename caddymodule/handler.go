package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// authorizationHeader is the header the token is injected into.
const authorizationHeader = "Authorization"

// Handler injects an Entra ID access token for one application into each
// request: it replaces every Authorization header the client sent with
// "Bearer <token>" and passes the request on. When no valid token can be had
// it answers itself, with the error's status and a JSON body
// {"code": "...", "message": "..."}, and does not call the next handler.
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

	app    *App
	logger *zap.Logger
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
	if h.Application == "" {
		return fmt.Errorf("%s: entra_token: application is required", tokencache.CodeApplicationNotFound)
	}
	appIface, err := ctx.AppIfConfigured("entra")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("%s: entra_token %s is used but no entra app is configured (add an entra block to the global options)",
			tokencache.CodeProviderNotConfigured, h.Application)
	}
	if err != nil {
		return fmt.Errorf("getting entra app: %v", err)
	}
	h.app = appIface.(*App)
	if !h.app.hasApplication(h.Application) {
		return fmt.Errorf("%s: entra_token: application %q is not configured (configured: %s)",
			tokencache.CodeApplicationNotFound, h.Application, h.app.applicationNames())
	}
	return nil
}

// ServeHTTP injects the token and calls next, or answers the error itself.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	credential, err := h.app.Token(r.Context(), h.Application)
	if err != nil {
		return h.writeError(w, r, err)
	}
	r.Header.Del(authorizationHeader)
	r.Header.Set(authorizationHeader, "Bearer "+credential.AccessToken)

	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.entra_token.application", h.Application)
		repl.Set("http.entra_token.expires_at", credential.AccessTokenExpiresAt.UTC().Format(time.RFC3339))
	}
	if c := h.logger.Check(zapcore.DebugLevel, "token injected"); c != nil {
		c.Write(zap.String("application", h.Application), zap.Time("expires_at", credential.AccessTokenExpiresAt))
	}
	return next.ServeHTTP(w, r)
}

// errorBody is the JSON answered when no token can be injected.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError answers a token failure with its code and status. The message
// comes from the token endpoint's error (error, AADSTS codes, trace and
// correlation IDs), which never holds a secret or a token.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) error {
	body := errorBody{Code: tokencache.CodeTokenRequestFailed, Message: err.Error()}
	var te *tokencache.Error
	if errors.As(err, &te) {
		body.Code, body.Message = te.Code, te.Message
	}
	status := tokencache.StatusForCode(body.Code)
	if r.Context().Err() != nil {
		// The client went away; there is nobody to answer.
		return caddyhttp.Error(499, err)
	}
	h.logger.Warn("no token injected",
		zap.String("application", h.Application),
		zap.String("code", body.Code),
		zap.Int("status", status))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(body)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
