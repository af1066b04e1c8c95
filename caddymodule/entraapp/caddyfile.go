package entraapp

import (
	"errors"
	"regexp"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("entra", parseGlobalOption)
}

func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		d.Next() // the option's name, so that the error says where the second one is
		return nil, d.Err("entra: the global option may appear only once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "entra", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens (docs/entra.md
// describes each option). Syntax:
//
//	entra {
//		tenant_id|client_id|authority_host|token_endpoint <value>
//		client_secret <secret>                    # or another credential:
//		client_certificate <cert.pem> [<key.pem>] { key_password <p>; send_x5c }
//		federated_token_file <path>
//		workload_identity
//		managed_identity [<client_id>] { object_id <id>; resource_id <id>; endpoint <url> }
//		client_auth post|basic|tls_client_auth|self_signed_tls_client_auth
//		token_request_param <name> <value>
//		refresh_window|wait_timeout <duration>
//		refresh_ahead <fraction>
//		token_request_concurrency <n>
//		prefetch [on|off]
//		client_capabilities <capability>...
//		hosts <name>...
//		redis [<url>] {
//			addrs <host:port>...
//			master_name|username|password|tls_ca|tls_server_name|key_prefix <value>
//			db <number>
//			tls
//			timeout <duration>
//			encryption_key <base64 of 32 bytes>    # or insecure_plaintext
//			entra [<application>] { max_connection_age <duration> }
//		}
//		application <name> [<scope>...] {
//			scope <scope>...
//			prefetch [on|off]
//			client_capabilities <capability>...
//			on_behalf_of { header <name>; max_users <n>; allowed_tenants <id>...; audiences <aud>... }
//			# any identity option above
//		}
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "refresh_window":
			err = durationArg(d, &a.RefreshWindow)
		case "wait_timeout":
			err = durationArg(d, &a.WaitTimeout)
		case "token_request_concurrency":
			err = intArg(d, &a.TokenRequestConcurrency, 1, func(string) error {
				return d.Err("token_request_concurrency: must be a whole number of at least 1")
			})
		case "refresh_ahead":
			if a.RefreshAhead != 0 { // 0 is not a valid fraction
				return d.Err("refresh_ahead: may appear only once")
			}
			var raw string
			if err := SingleArg(d, &raw); err != nil {
				return err
			}
			if a.RefreshAhead, err = parseFraction(raw); err != nil {
				return d.Errf("refresh_ahead: %v", err)
			}
		case "hosts":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.Err("hosts: at least one name is required (e.g. hosts sidecar)")
			}
			a.Hosts = append(a.Hosts, names...)
		case "redis":
			err = parseOnce(d, &a.Redis, parseRedis)
		case "application":
			err = a.parseApplication(d)
		case "client_capabilities":
			err = capabilitiesArg(d, &a.ClientCapabilities)
		case "prefetch":
			if a.Prefetch {
				return d.Err("prefetch: may appear only once")
			}
			a.Prefetch, err = parsePrefetch(d)
		default:
			err = parseIdentityOption(d, &a.IdentityConfig, "entra")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseIdentityOption parses an identity option into id; any other option
// is unrecognized in block.
func parseIdentityOption(d *caddyfile.Dispenser, id *IdentityConfig, block string) error {
	switch d.Val() {
	case "client_auth":
		if err := SingleArg(d, &id.ClientAuth); err != nil {
			return err
		}
		switch id.ClientAuth {
		case "post", "basic", "tls_client_auth", "self_signed_tls_client_auth":
		default:
			return d.Errf("client_auth: want post, basic, tls_client_auth or self_signed_tls_client_auth, got %q", id.ClientAuth)
		}
		return nil
	case "workload_identity":
		if id.WorkloadIdentity {
			return d.Err("workload_identity: may appear only once")
		}
		return FlagArg(d, &id.WorkloadIdentity)
	case "client_certificate":
		return parseOnce(d, &id.ClientCertificate, parseClientCertificate)
	case "managed_identity":
		return parseOnce(d, &id.ManagedIdentity, parseManagedIdentity)
	case "token_request_param":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return d.Errf("token_request_param: want <name> <value>")
		}
		if _, dup := id.TokenRequestParams[args[0]]; dup {
			return d.Errf("token_request_param %s: set twice", args[0])
		}
		if id.TokenRequestParams == nil {
			id.TokenRequestParams = make(map[string]string)
		}
		id.TokenRequestParams[args[0]] = args[1]
		return nil
	}
	if d.Val() == "client_secret" {
		return SecretArg(d, &id.ClientSecret)
	}
	dest, ok := map[string]*string{"tenant_id": &id.TenantID, "client_id": &id.ClientID,
		"authority_host": &id.AuthorityHost, "token_endpoint": &id.TokenEndpoint,
		"federated_token_file": &id.FederatedTokenFile}[d.Val()]
	if !ok {
		return UnrecognizedOption(d, block)
	}
	return SingleArg(d, dest)
}

func parseClientCertificate(d *caddyfile.Dispenser) (*ClientCertificateConfig, error) {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return nil, d.Errf("client_certificate: want <cert.pem> [<key.pem>]")
	}
	cert := &ClientCertificateConfig{Certificate: args[0]}
	if len(args) == 2 {
		cert.Key = args[1]
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "key_password":
			err = SecretArg(d, &cert.KeyPassword)
		case "send_x5c":
			err = FlagArg(d, &cert.SendX5C)
		default:
			return nil, UnrecognizedOption(d, "client_certificate")
		}
		if err != nil {
			return nil, err
		}
	}
	return cert, nil
}

func parseManagedIdentity(d *caddyfile.Dispenser) (*ManagedIdentityConfig, error) {
	mi := new(ManagedIdentityConfig)
	if d.NextArg() {
		mi.ClientID = d.Val()
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		dest, ok := map[string]*string{"endpoint": &mi.Endpoint, "object_id": &mi.ObjectID, "resource_id": &mi.ResourceID}[d.Val()]
		if !ok {
			return nil, UnrecognizedOption(d, "managed_identity")
		}
		if err := SingleArg(d, dest); err != nil {
			return nil, err
		}
	}
	return mi, nil
}

// parseOnce parses a block option into dest with parse, once.
func parseOnce[T any](d *caddyfile.Dispenser, dest **T, parse func(*caddyfile.Dispenser) (*T, error)) error {
	if *dest != nil {
		return d.Errf("%s: may appear only once", d.Val())
	}
	var err error
	*dest, err = parse(d)
	return err
}

// UnrecognizedOption refuses the option at d in block, quoting it only if
// it looks like an option's name: a line that starts with anything else
// may be the rest of a secret (a {$VAR} holding a line break is split into
// lines before parsing).
func UnrecognizedOption(d *caddyfile.Dispenser, block string) error {
	if optionName.MatchString(d.Val()) {
		return d.Errf("unrecognized %s option '%s'", block, d.Val())
	}
	return d.Errf("unrecognized %s option (not quoted: it is no option's name; the rest of a value on its own line?)", block)
}

var optionName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

// SingleArg reads the option's one argument into dest, once.
func SingleArg(d *caddyfile.Dispenser, dest *string) error {
	return oneArg(d, dest, d.ArgErr)
}

// SecretArg is SingleArg for an option whose value is a secret: its errors
// quote no token, where d.ArgErr quotes the one after the value, which is
// the rest of a secret holding a space (written unquoted, or substituted
// from a {$VAR} before the Caddyfile is split into tokens).
func SecretArg(d *caddyfile.Dispenser, dest *string) error {
	option := d.Val()
	return oneArg(d, dest, func() error {
		return d.Errf("%s: want exactly one value (quote a value holding spaces)", option)
	})
}

// oneArg reads the option's one argument into dest, once; wrongCount is
// the error of none or more than one.
func oneArg(d *caddyfile.Dispenser, dest *string, wrongCount func() error) error {
	option := d.Val()
	if *dest != "" {
		return d.Errf("%s: may appear only once", option)
	}
	if !d.NextArg() {
		return wrongCount()
	}
	value := d.Val()
	if d.NextArg() {
		return wrongCount()
	}
	*dest = value
	return nil
}

// FlagArg sets dest for an option without arguments.
func FlagArg(d *caddyfile.Dispenser, dest *bool) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	*dest = true
	return nil
}

// intArg reads the option's one argument, a whole number of at least
// least, into dest, once; bad is the error of any other.
func intArg(d *caddyfile.Dispenser, dest *int, least int, bad func(raw string) error) error {
	if *dest != 0 {
		return d.Errf("%s: may appear only once", d.Val())
	}
	var raw string
	if err := SingleArg(d, &raw); err != nil {
		return err
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < least {
		return bad(raw)
	}
	*dest = n
	return nil
}

// durationArg reads one positive duration into dest, once.
func durationArg(d *caddyfile.Dispenser, dest *caddy.Duration) error {
	option := d.Val()
	if *dest != 0 {
		return d.Errf("%s: may appear only once", option)
	}
	var raw string
	if err := SingleArg(d, &raw); err != nil {
		return err
	}
	value, err := caddy.ParseDuration(raw)
	if err != nil {
		return d.Errf("%s: %v", option, err)
	}
	if value <= 0 {
		return d.Errf("%s: must be positive", option)
	}
	*dest = caddy.Duration(value)
	return nil
}

// parseFraction accepts 0.5 or 50%, strictly between 0 and 1.
func parseFraction(raw string) (float64, error) {
	scale := 1.0
	if strings.HasSuffix(raw, "%") {
		raw, scale = strings.TrimSuffix(raw, "%"), 100
	}
	value, err := strconv.ParseFloat(raw, 64)
	if err != nil {
		return 0, err
	}
	value /= scale
	if !(value > 0 && value < 1) {
		return 0, errors.New("must be above 0 and below 1 (or 0% and 100%)")
	}
	return value, nil
}

func parsePrefetch(d *caddyfile.Dispenser) (bool, error) {
	if !d.NextArg() {
		return true, nil
	}
	value := d.Val()
	if d.NextArg() {
		return false, d.ArgErr()
	}
	switch value {
	case "on", "true":
		return true, nil
	case "off", "false":
		return false, nil
	}
	return false, d.Errf("prefetch: want on or off, got %q", value)
}

func parseRedis(d *caddyfile.Dispenser) (*RedisConfig, error) {
	redis := new(RedisConfig)
	if d.NextArg() {
		redis.URL = d.Val()
	}
	if d.NextArg() { // not d.ArgErr: the URL may hold a password, this token the rest of it
		return nil, d.Err("redis: want at most one URL (quote a value holding spaces)")
	}
	dbSet := false
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch option := d.Val(); option {
		case "addrs":
			addrs := d.RemainingArgs()
			if len(addrs) == 0 {
				return nil, d.ArgErr()
			}
			redis.Addrs = append(redis.Addrs, addrs...)
		case "db":
			if dbSet { // intArg cannot tell a first "db 0" from none
				return nil, d.Err("db: may appear only once")
			}
			dbSet = true
			err = intArg(d, &redis.DB, 0, func(raw string) error {
				return d.Errf("db: want a database number, got %q", raw)
			})
		case "tls":
			err = FlagArg(d, &redis.TLS)
		case "timeout":
			err = durationArg(d, &redis.Timeout)
		case "encryption_key":
			var key string
			if err = SecretArg(d, &key); err == nil {
				redis.EncryptionKeys = append(redis.EncryptionKeys, key)
			}
		case "insecure_plaintext":
			err = FlagArg(d, &redis.InsecurePlaintext)
		case "entra":
			if redis.Entra != nil {
				return nil, d.Err("redis entra: may appear only once")
			}
			redis.Entra = new(RedisEntra)
			if d.NextArg() {
				redis.Entra.Application = d.Val()
			}
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				if d.Val() != "max_connection_age" {
					return nil, UnrecognizedOption(d, "redis entra")
				}
				if err := durationArg(d, &redis.Entra.MaxConnectionAge); err != nil {
					return nil, err
				}
			}
		case "password":
			err = SecretArg(d, &redis.Password)
		default:
			dest, ok := map[string]*string{"master_name": &redis.MasterName, "username": &redis.Username,
				"tls_ca": &redis.TLSCA, "tls_server_name": &redis.TLSServerName, "key_prefix": &redis.KeyPrefix}[option]
			if !ok {
				return nil, UnrecognizedOption(d, "redis")
			}
			err = SingleArg(d, dest)
		}
		if err != nil {
			return nil, err
		}
	}
	if redis.URL == "" && len(redis.Addrs) == 0 {
		return nil, d.Errf("redis: a redis:// or rediss:// URL, or addrs, is required")
	}
	return redis, nil
}

func (a *App) parseApplication(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Errf("application: a name is required")
	}
	name := d.Val()
	if _, dup := a.Applications[name]; dup {
		return d.Errf("application %s: defined twice", name)
	}
	app := &Application{Scopes: d.RemainingArgs()}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "scope":
			scopes := d.RemainingArgs()
			if len(scopes) == 0 {
				return d.ArgErr()
			}
			app.Scopes = append(app.Scopes, scopes...)
		case "prefetch":
			if app.Prefetch != nil {
				return d.Err("prefetch: may appear only once")
			}
			app.Prefetch = new(bool)
			*app.Prefetch, err = parsePrefetch(d)
		case "client_capabilities":
			err = capabilitiesArg(d, &app.ClientCapabilities)
		case "on_behalf_of":
			err = parseOnce(d, &app.OnBehalfOf, parseOnBehalfOf)
		default:
			err = parseIdentityOption(d, &app.IdentityConfig, "application")
		}
		if err != nil {
			return err
		}
	}
	if len(app.Scopes) == 0 {
		return d.Errf("application %s: at least one scope is required", name)
	}
	if a.Applications == nil {
		a.Applications = make(map[string]*Application)
	}
	a.Applications[name] = app
	return nil
}

func capabilitiesArg(d *caddyfile.Dispenser, dest *[]string) error {
	if *dest != nil {
		return d.Err("client_capabilities: may appear only once")
	}
	capabilities := d.RemainingArgs()
	if len(capabilities) == 0 {
		return d.Err("client_capabilities: at least one capability is required (e.g. client_capabilities cp1)")
	}
	*dest = capabilities
	return nil
}

func parseOnBehalfOf(d *caddyfile.Dispenser) (*OnBehalfOfConfig, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	obo := new(OnBehalfOfConfig)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch option := d.Val(); option {
		case "header":
			if err := SingleArg(d, &obo.Header); err != nil {
				return nil, err
			}
		case "max_users":
			if err := intArg(d, &obo.MaxUsers, 1, func(raw string) error {
				return d.Errf("max_users: must be a whole number of at least 1, got %q", raw)
			}); err != nil {
				return nil, err
			}
		case "allowed_tenants", "audiences":
			values := d.RemainingArgs()
			if len(values) == 0 {
				return nil, d.Errf("%s: at least one value is required", option)
			}
			dest := map[string]*[]string{"allowed_tenants": &obo.AllowedTenants, "audiences": &obo.Audiences}[option]
			*dest = append(*dest, values...)
		default:
			return nil, UnrecognizedOption(d, "on_behalf_of")
		}
	}
	return obo, nil
}

// Directive parses a handler directive into a new H.
func Directive[H any, P interface {
	*H
	caddyhttp.MiddlewareHandler
	caddyfile.Unmarshaler
}](h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := P(new(H))
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// Interface guard
var _ caddyfile.Unmarshaler = (*App)(nil)
