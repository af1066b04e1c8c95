// Package entratokenendpoint is the entra_token_endpoint HTTP handler: it
// hands the entra app's tokens to local code, in the record protocol of
// better-auth-client-credential or a managed identity protocol.
package entratokenendpoint

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
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
	caddy.RegisterModule(TokenEndpoint{})
}

// The endpoint's collectors, beside the app's (see entraapp.RegisterMetrics).
var (
	endpointTokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "entra", Name: "endpoint_tokens_total",
		Help: "Tokens handed out by entra_token_endpoint to local applications, by application and protocol (record, app_service, imds).",
	}, []string{"application", "protocol"})
	endpointRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "entra", Name: "endpoint_refusals_total",
		Help: "Requests entra_token_endpoint refused without a token, by protocol and reason.",
	}, []string{"protocol", "reason"})
)

// The protocols entra_token_endpoint speaks.
const (
	// ProtocolRecord is better-auth-client-credential's
	// getClientCredentialToken over local HTTP (tokencache.Record as JSON).
	ProtocolRecord = "record"
	// ProtocolAppService is the App Service / Container Apps managed
	// identity protocol, api-version 2019-08-01.
	ProtocolAppService = "app_service"
	// ProtocolIMDS is the Azure Instance Metadata Service token protocol,
	// api-versions 2018-02-01 and 2019-08-01.
	ProtocolIMDS = "imds"
)

// minSecretLength: the secret is all between local processes and the tokens.
const minSecretLength = 16

// TokenEndpoint hands the entra app's tokens to local code that cannot be
// proxied: code that wants the record itself, and Azure SDKs asking a local
// managed identity endpoint. It answers every request itself.
//
// Only loopback (or Unix socket) peers are answered, unless allow_remote; a
// request with a header a proxy adds, from a web page, or with a Host that
// is not local is refused. A token handed out has more than refresh_window
// left. A managed-identity request's resource picks the application; an
// identity parameter must name that application's identity, never another.
type TokenEndpoint struct {
	// Protocol is record, app_service or imds. Required.
	Protocol string `json:"protocol,omitempty"`

	// Secret is what clients send in X-IDENTITY-HEADER, at least 16
	// characters, best as a placeholder. Required for record and
	// app_service, refused for imds.
	Secret string `json:"secret,omitempty"`

	// Applications this endpoint may hand out. Default: all.
	Applications []string `json:"applications,omitempty"`

	// Resources maps managed-identity resources to applications. Default:
	// each application whose only scope is "<resource>/.default" serves
	// that resource. Not for record.
	Resources map[string]string `json:"resources,omitempty"`

	// AllowRemote answers peers off loopback: the secret is then the only
	// guard (refused for imds, which has none). Default false.
	AllowRemote bool `json:"allow_remote,omitempty"`

	app          *entraapp.App
	secretDigest [sha256.Size]byte
	allowed      map[string]*endpointApplication // by application name
	byResource   map[string]*endpointApplication // by normalized resource
	logger       *zap.Logger

	accessLogWarned *atomic.Bool         // see warnIfAccessLogged
	peerRefusals    *entraapp.RefusalLog // warnings of refused peers, proxies and secrets
}

type endpointApplication struct {
	entraapp.ApplicationIDs
	handedOut prometheus.Counter // endpoint_tokens_total
}

// CaddyModule returns the Caddy module information.
func (TokenEndpoint) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.entra_token_endpoint",
		New: func() caddy.Module { return new(TokenEndpoint) },
	}
}

// Provision finds the entra app, resolves the secret and maps the
// applications and resources.
func (e *TokenEndpoint) Provision(ctx caddy.Context) error {
	e.logger = ctx.Logger()
	app, err := entraapp.FromContext(ctx, "entra_token_endpoint", endpointTokens, endpointRefusals)
	if err != nil {
		return err
	}
	return e.provision(app)
}

func (e *TokenEndpoint) provision(app *entraapp.App) error {
	if e.logger == nil {
		e.logger = zap.NewNop()
	}
	e.app = app
	e.accessLogWarned, e.peerRefusals = new(atomic.Bool), new(entraapp.RefusalLog)
	switch e.Protocol {
	case ProtocolRecord, ProtocolAppService, ProtocolIMDS:
	case "":
		return endpointConfigError("protocol", "is required: record, app_service or imds")
	default:
		return endpointConfigError("protocol", fmt.Sprintf("%q is not one of record, app_service, imds", e.Protocol))
	}
	if err := e.provisionSecret(); err != nil {
		return err
	}
	if e.Protocol == ProtocolIMDS && e.AllowRemote {
		return endpointConfigError("allow_remote", "is refused for imds: the IMDS protocol has no secret, so any "+
			"host that reaches the listener would get tokens")
	}
	if e.AllowRemote {
		e.logger.Warn("entra_token_endpoint answers non-loopback peers (allow_remote): the secret is the only guard; "+
			"serve it over TLS and restrict who can reach the listener", zap.String("protocol", e.Protocol))
	}
	all, err := app.ApplicationIDs()
	if err != nil {
		return err
	}
	// The managed-identity protocols carry no user's token to exchange.
	managedIdentity := e.Protocol != ProtocolRecord
	names := e.Applications
	if len(names) == 0 {
		for _, ids := range all {
			if _, onBehalfOf := app.UserTokenHeader(ids.Name); !onBehalfOf || !managedIdentity {
				names = append(names, ids.Name)
			}
		}
	}
	e.allowed = make(map[string]*endpointApplication, len(names))
	for _, name := range names {
		i := slices.IndexFunc(all, func(ids entraapp.ApplicationIDs) bool { return ids.Name == name })
		if i < 0 {
			return app.RequireApplication("entra_token_endpoint", name)
		}
		if _, onBehalfOf := app.UserTokenHeader(name); onBehalfOf && managedIdentity {
			return endpointConfigError("application", fmt.Sprintf("%s exchanges users' tokens (on_behalf_of): the %s "+
				"protocol carries no user's token; use record with an assertion", name, e.Protocol))
		}
		e.allowed[name] = &endpointApplication{ApplicationIDs: all[i], handedOut: endpointTokens.WithLabelValues(name, e.Protocol)}
	}
	return e.provisionResources()
}

func (e *TokenEndpoint) provisionSecret() error {
	if e.Protocol == ProtocolIMDS {
		if e.Secret != "" {
			return endpointConfigError("secret", "is refused for imds: IMDS clients send no secret (use app_service "+
				"for a protocol with one)")
		}
		return nil
	}
	if e.Secret == "" {
		return endpointConfigError("secret", fmt.Sprintf("is required for the %s protocol (what clients send in "+
			"X-IDENTITY-HEADER; e.g. secret {env.IDENTITY_HEADER})", e.Protocol))
	}
	secret, err := entraapp.ResolveSecret("entra_token_endpoint secret", e.Secret)
	if err != nil {
		return err
	}
	if len(secret) < minSecretLength {
		return endpointConfigError("secret", fmt.Sprintf("must be at least %d characters: it is all that stands "+
			"between local processes and the tokens (e.g. openssl rand -hex 32)", minSecretLength))
	}
	entraapp.WarnLiteralSecret(e.logger, "entra_token_endpoint secret", e.Secret)
	e.secretDigest = sha256.Sum256([]byte(secret))
	return nil
}

// provisionResources maps resources: explicitly, then each application
// whose only scope is "<resource>/.default" (two must be told apart).
func (e *TokenEndpoint) provisionResources() error {
	if e.Protocol == ProtocolRecord {
		if len(e.Resources) > 0 {
			return endpointConfigError("resource", "applies to app_service and imds only (record clients name the application)")
		}
		return nil
	}
	e.byResource = make(map[string]*endpointApplication)
	claimedBy := make(map[string][]string)
	for name, ea := range e.allowed {
		if resource, ok := defaultResource(ea.Scopes); ok {
			claimedBy[resource] = append(claimedBy[resource], name)
		}
	}
	for _, resource := range slices.Sorted(maps.Keys(e.Resources)) {
		name := e.Resources[resource]
		key := normalizeResource(resource)
		if key == "" {
			return endpointConfigError("resource", "a resource must not be empty")
		}
		if _, dup := e.byResource[key]; dup {
			return endpointConfigError("resource "+resource, "is mapped twice (with and without a trailing slash are the same resource)")
		}
		ea, ok := e.allowed[name]
		if !ok {
			if err := e.app.RequireApplication("entra_token_endpoint resource "+resource, name); err != nil {
				return err
			}
			return endpointConfigError("resource "+resource, fmt.Sprintf("application %q is not among this endpoint's applications", name))
		}
		if own, ok := defaultResource(ea.Scopes); !ok || own != key {
			e.logger.Warn("a resource is mapped to an application whose scope is for another resource: clients asking "+
				"for it get a token whose audience is the application's",
				zap.String("resource", resource), zap.String("application", name), zap.Strings("scopes", ea.Scopes))
		}
		e.byResource[key] = ea
	}
	for _, resource := range slices.Sorted(maps.Keys(claimedBy)) {
		if _, mapped := e.byResource[resource]; mapped {
			continue
		}
		names := claimedBy[resource]
		if len(names) > 1 {
			slices.Sort(names)
			return endpointConfigError("resource", fmt.Sprintf("applications %s all have the only scope %s/.default: "+
				"map the resource to one of them (resource %s <application>) or leave the others out (application ...)",
				strings.Join(names, ", "), resource, resource))
		}
		e.byResource[resource] = e.allowed[names[0]]
	}
	if len(e.byResource) == 0 {
		return endpointConfigError("resource", "no allowed application has a single <resource>/.default scope, "+
			"so no resource can be served: map one with resource <resource> <application>")
	}
	return nil
}

func defaultResource(scopes []string) (string, bool) {
	if len(scopes) != 1 {
		return "", false
	}
	resource, ok := strings.CutSuffix(scopes[0], "/.default")
	return normalizeResource(resource), ok && resource != ""
}

// normalizeResource drops a trailing slash, which SDKs send or not.
func normalizeResource(resource string) string {
	return strings.TrimSuffix(strings.TrimSpace(resource), "/")
}

func endpointConfigError(field, reason string) error {
	return entraapp.ConfigError("entra_token_endpoint "+field, reason)
}

// ServeHTTP answers the request itself; next is never called. It hands
// Caddy no error: Caddy's error log records the request's headers, the
// endpoint's secret in X-IDENTITY-HEADER among them, and what could fail
// here (a write, a client that left) is the client's to see.
func (e *TokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	_ = e.serve(w, r)
	return nil
}

func (e *TokenEndpoint) serve(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	e.warnIfAccessLogged(r)
	if refusal := e.checkPeer(r); refusal != nil {
		return e.refuse(w, r, refusal)
	}
	switch e.Protocol {
	case ProtocolRecord:
		return e.serveRecord(w, r)
	case ProtocolAppService:
		return e.serveManagedIdentity(w, r, appServiceProtocol)
	default:
		return e.serveManagedIdentity(w, r, imdsProtocol)
	}
}

// refusal is a request answered without a token, in the protocol's shape.
type refusal struct {
	status  int
	reason  string // endpoint_refusals_total's label: never request data
	code    string // the protocol's error code
	message string
}

// Reasons of endpoint_refusals_total.
const (
	reasonRemotePeer  = "remote_peer"
	reasonForwarded   = "forwarded"
	reasonHost        = "host"
	reasonBrowser     = "browser"
	reasonMethod      = "method"
	reasonNoSecret    = "no_secret"
	reasonWrongSecret = "wrong_secret"
	reasonNoMetadata  = "no_metadata_header"
	reasonBadRequest  = "bad_request"
	reasonApplication = "application_not_allowed"
	reasonResource    = "unknown_resource"
	reasonIdentity    = "identity_mismatch"
	reasonToken       = "token_request_failed"
	reasonUserToken   = "user_token_refused"
)

// checkPeer refuses what is not the application beside the sidecar: a
// proxied request, a web page's, a peer off loopback or a Host not local
// (the last two unless allow_remote, where the secret guards).
func (e *TokenEndpoint) checkPeer(r *http.Request) *refusal {
	if name := proxyHeader(r.Header); name != "" {
		return &refusal{http.StatusBadRequest, reasonForwarded, "invalid_request", "Request contains " + name + " header"}
	}
	notLocal := e.app.NotLocal(r)
	if notLocal == entraapp.NotLocalBrowser {
		return &refusal{http.StatusForbidden, reasonBrowser, "forbidden", notLocal}
	}
	if _, ok := r.Header["Sec-Fetch-Site"]; ok {
		// Even same-origin or none: a page the sidecar's origin serves
		// (an upstream's HTML) would read the token. Browsers send it with
		// every Fetch Metadata header; Node's fetch sends Sec-Fetch-Mode
		// alone, which passes.
		return &refusal{http.StatusForbidden, reasonBrowser, "forbidden", "the request carries Sec-Fetch-Site: " +
			"a browser sent it, and only SDKs and HTTP clients get tokens from this endpoint"}
	}
	if e.AllowRemote {
		return nil
	}
	if !entraapp.IsLocalPeer(r) {
		return &refusal{http.StatusForbidden, reasonRemotePeer, "forbidden", "the token endpoint answers loopback peers only"}
	}
	if notLocal != "" {
		return &refusal{http.StatusForbidden, reasonHost, "forbidden", notLocal}
	}
	return nil
}

// proxyHeaders are what proxies and CDNs add, by canonical key and name.
var proxyHeaders = [...]struct{ key, name string }{
	{"X-Forwarded-For", "X-Forwarded-For"},
	{"Forwarded", "Forwarded"},
	{"Via", "Via"},
	{"X-Real-Ip", "X-Real-IP"},
	{"X-Original-Forwarded-For", "X-Original-Forwarded-For"},
	{"True-Client-Ip", "True-Client-IP"},
	{"X-Client-Ip", "X-Client-IP"},
	{"X-Cluster-Client-Ip", "X-Cluster-Client-IP"},
	{"Cf-Connecting-Ip", "CF-Connecting-IP"},
}

// proxyHeader returns the fixed name of a header a proxy adds, or "".
func proxyHeader(h http.Header) string {
	for _, p := range proxyHeaders {
		if _, ok := h[p.key]; ok {
			return p.name
		}
	}
	const prefix = "X-Forwarded-"
	for name := range h {
		if len(name) > len(prefix) && strings.EqualFold(name[:len(prefix)], prefix) {
			return prefix + "*"
		}
	}
	return ""
}

// checkSecret compares X-IDENTITY-HEADER's digest in constant time.
func (e *TokenEndpoint) checkSecret(r *http.Request) *refusal {
	values := r.Header.Values("X-Identity-Header")
	if len(values) == 0 || values[0] == "" {
		return &refusal{http.StatusUnauthorized, reasonNoSecret, "UNAUTHORIZED", "the X-IDENTITY-HEADER header is required"}
	}
	got := sha256.Sum256([]byte(values[0]))
	if len(values) != 1 || subtle.ConstantTimeCompare(got[:], e.secretDigest[:]) != 1 {
		return &refusal{http.StatusForbidden, reasonWrongSecret, "FORBIDDEN", "Unable to validate the X-IDENTITY-HEADER header"}
	}
	return nil
}

// refuse answers, counts and logs (with only the peer's address) a refusal.
func (e *TokenEndpoint) refuse(w http.ResponseWriter, r *http.Request, rf *refusal) error {
	endpointRefusals.WithLabelValues(e.Protocol, rf.reason).Inc()
	var logged bool
	var unlogged int64
	switch rf.reason {
	case reasonHost, reasonBrowser: // a web page can send these at will
		logged, unlogged = e.app.LogBrowserRefusal()
	case reasonRemotePeer, reasonForwarded, reasonWrongSecret: // a peer can send these at will
		logged, unlogged = e.peerRefusals.Allow(time.Now())
	}
	level := zapcore.DebugLevel
	if logged {
		level = zapcore.WarnLevel
	}
	if c := e.logger.Check(level, "token endpoint refused a request"); c != nil {
		c.Write(zap.String("protocol", e.Protocol), zap.String("reason", rf.reason),
			zap.Int("status", rf.status), zap.String("remote_addr", r.RemoteAddr),
			zap.Int64("refused_unlogged_since_last", unlogged))
	}
	switch e.Protocol {
	case ProtocolRecord:
		return writeJSONResponse(w, rf.status, entraapp.ErrorBody{Code: rf.code, Message: rf.message})
	case ProtocolAppService:
		return writeJSONResponse(w, rf.status, appServiceError{StatusCode: rf.status, Message: rf.message,
			CorrelationID: correlationID(r)})
	default:
		return writeJSONResponse(w, rf.status, imdsError{Error: rf.code, Description: rf.message})
	}
}

// refuseToken answers a failure to get application's token with the
// error's status, Retry-After and challenge; a client that left gets
// status 499 and no body instead.
func (e *TokenEndpoint) refuseToken(w http.ResponseWriter, r *http.Request, application string, err error) error {
	if r.Context().Err() != nil {
		w.WriteHeader(499) // the access log's status, as reverse_proxy's for a client that left
		return nil
	}
	answer := entraapp.AnswerFor(err)
	entraapp.SetRetryAfter(w.Header(), answer.RetryAfter)
	rf := &refusal{status: answer.Status, reason: reasonToken, code: answer.Code, message: answer.Message}
	if answer.Challenge != "" {
		w.Header().Set("WWW-Authenticate", answer.Challenge)
		rf.reason = reasonUserToken // as common as its callers make it: not warned
	} else {
		e.logger.Warn("token endpoint has no token to hand out",
			zap.String("protocol", e.Protocol), zap.String("application", application),
			zap.String("code", rf.code), zap.Int("status", rf.status))
	}
	if e.Protocol != ProtocolRecord && rf.code == entraapp.CodeTokenRequestFailed {
		rf.code = "temporarily_unavailable" // the OAuth error of the managed-identity protocols
		if rf.status == http.StatusBadGateway {
			rf.code = "bad_gateway"
		}
		rf.message = entraapp.CodeTokenRequestFailed + ": " + rf.message
	}
	return e.refuse(w, r, rf)
}

func (e *TokenEndpoint) handedOut(ea *endpointApplication, credential tokencache.Record) {
	ea.handedOut.Inc()
	if c := e.logger.Check(zapcore.DebugLevel, "token handed out"); c != nil {
		c.Write(zap.String("protocol", e.Protocol), zap.String("application", ea.Name),
			zap.Time("expires_at", credential.AccessTokenExpiresAt))
	}
}

// Interface guard; entraapp.Directive checks the handler's other interfaces.
var _ caddy.Provisioner = (*TokenEndpoint)(nil)
