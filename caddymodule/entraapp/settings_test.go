package entraapp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestRedisAddrsWantHostPort: an address that is not host:port is refused
// at load, naming its index and not its value: a URL there would have its
// password logged with the addresses, and one without a port never connects.
func TestRedisAddrsWantHostPort(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		refused bool
	}{
		{"redis://:pAss1r14@127.0.0.1:6379", true},
		{"rediss://127.0.0.1:6380", true},
		{"default:pAss1r14@127.0.0.1:6379", true},
		{"redis.internal", true},
		{"redis.internal:", true},
		{"redis.internal:port", true},
		{"redis.internal:0", true},
		{"redis.internal:65536", true},
		{"redis-0.redis:6379", false},
		{"10.0.0.1:6379", false},
		{"[::1]:6379", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			rc := &RedisConfig{Addrs: []string{"10.0.0.1:6379", tc.addr}, InsecurePlaintext: true}
			_, _, err := rc.options(caddy.NewReplacer())
			if !tc.refused {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			const want = "MICROSOFT_PROVIDER_INVALID_CONFIG: redis addrs[1]: want host:port (a URL goes in the redis option itself)"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v, want %q", err, want)
			}
			if strings.Contains(err.Error(), "pAss1r14") || strings.Contains(err.Error(), "redis.internal") {
				t.Errorf("error %q quotes the address", err)
			}
		})
	}
}

// TestRedisURLInAddrsIsNeitherLoadedNorLogged: a URL given to addrs through a
// placeholder is refused at load, and its password appears in no log.
func TestRedisURLInAddrsIsNeitherLoadedNorLogged(t *testing.T) {
	t.Setenv("ENTRA_TEST_REDIS_ADDR", "redis://:pAss1r14@127.0.0.1:6379")
	core, logs := observer.New(zapcore.DebugLevel)
	app := &App{
		IdentityConfig: IdentityConfig{TenantID: "t", ClientID: "00000000-0000-4000-8000-0000000000c1", ClientSecret: "s"},
		Redis:          &RedisConfig{Addrs: []string{"{env.ENTRA_TEST_REDIS_ADDR}"}, InsecurePlaintext: true},
		Applications:   map[string]*Application{"a": {Scopes: []string{"api://a/.default"}}},
	}
	err := app.ProvisionForTest(zap.New(core))
	t.Cleanup(func() { _ = app.Cleanup() })
	if err == nil || !strings.Contains(err.Error(), "redis addrs[0]: want host:port") {
		t.Fatalf("error = %v, want redis addrs[0] refused", err)
	}
	if strings.Contains(err.Error(), "pAss1r14") {
		t.Errorf("error %q holds the password", err)
	}
	for _, entry := range logs.All() {
		if line := entry.Message + " " + fmt.Sprint(entry.ContextMap()); strings.Contains(line, "pAss1r14") {
			t.Errorf("log holds the password: %s", line)
		}
	}
}

// A redis timeout below a millisecond is refused: every call would time
// out, and the replicas would stop sharing tokens without a word.
func TestRedisTimeoutBelowAMillisecondIsRefused(t *testing.T) {
	for _, tc := range []struct {
		timeout time.Duration
		refused bool
	}{{time.Nanosecond, true}, {999 * time.Microsecond, true}, {time.Millisecond, false}, {0, false}} {
		rc := &RedisConfig{URL: "redis://127.0.0.1:6379", InsecurePlaintext: true, Timeout: caddy.Duration(tc.timeout)}
		_, _, err := rc.options(caddy.NewReplacer())
		if refused := err != nil && strings.Contains(err.Error(), "redis timeout: must be at least 1ms"); refused != tc.refused || (err != nil && !refused) {
			t.Errorf("timeout %v: error = %v, want refused %v", tc.timeout, err, tc.refused)
		}
	}
}

// A redis tls_ca given the CA's content (a {file.*} or {env.*} value) is
// refused without quoting it, and a missing file is named by its fault,
// not its path.
func TestRedisTLSCAErrorsQuoteNoValue(t *testing.T) {
	const content = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJjYQ=="
	for _, tc := range []struct{ tlsCA, want string }{
		{"-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----", "redis tls_ca: takes a file path"},
		{content, "redis tls_ca: reading the CA file: the file does not exist"},
	} {
		rc := &RedisConfig{URL: "rediss://127.0.0.1:6379", InsecurePlaintext: true, TLSCA: tc.tlsCA}
		_, _, err := rc.options(caddy.NewReplacer())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error = %v, want %q", err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "MIIBca") || strings.Contains(err.Error(), content[:12])) {
			t.Errorf("the error quotes the value: %v", err)
		}
	}
}

// Every duration option below its least sensible value is refused at
// load, naming the option and the minimum, whether the config is a
// Caddyfile or JSON; the minimum itself loads.
func TestDurationsBelowTheirMinimumAreRefused(t *testing.T) {
	const caddyfileTemplate = `entra {
		tenant_id 00000000-0000-4000-8000-000000000001
		client_id 00000000-0000-4000-8000-0000000000c1
		client_secret duration-test-secret
		%s
		redis redis://127.0.0.1:6379 {
			insecure_plaintext
			%s
			entra {
				%s
			}
		}
		application orders-api api://orders/.default
	}`
	const jsonTemplate = `{
		"tenant_id": "00000000-0000-4000-8000-000000000001",
		"client_id": "00000000-0000-4000-8000-0000000000c1",
		"client_secret": "duration-test-secret",
		%s
		"redis": {"url": "redis://127.0.0.1:6379", "insecure_plaintext": true, %s "entra": {%s}},
		"applications": {"orders-api": {"scopes": ["api://orders/.default"]}}
	}`
	for _, tc := range []struct {
		option, field string
		level         int // 0: the entra block, 1: redis, 2: redis entra
		least         time.Duration
	}{
		{"refresh_window", "refresh_window", 0, MinRefreshWindow},
		{"wait_timeout", "wait_timeout", 0, MinWaitTimeout},
		{"timeout", "redis timeout", 1, MinRedisTimeout},
		{"max_connection_age", "redis entra max_connection_age", 2, MinRedisMaxConnectionAge},
	} {
		for _, value := range []time.Duration{time.Nanosecond, tc.least - time.Nanosecond, tc.least} {
			caddyfileArgs, jsonArgs := []any{"", "", ""}, []any{"", "", ""}
			caddyfileArgs[tc.level] = tc.option + " " + value.String()
			jsonArgs[tc.level] = fmt.Sprintf(`"%s": "%s"`, tc.option, value)
			if tc.level < 2 {
				jsonArgs[tc.level] = jsonArgs[tc.level].(string) + ","
			}
			load := map[string]func() (*App, error){
				"caddyfile": func() (*App, error) {
					app := new(App)
					return app, app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(fmt.Sprintf(caddyfileTemplate, caddyfileArgs...)))
				},
				"json": func() (*App, error) {
					app := new(App)
					return app, json.Unmarshal([]byte(fmt.Sprintf(jsonTemplate, jsonArgs...)), app)
				},
			}
			for format, parse := range load {
				t.Run(fmt.Sprintf("%s %s %s", format, tc.option, value), func(t *testing.T) {
					app, err := parse()
					if err != nil {
						t.Fatalf("parsing: %v", err)
					}
					_, err = app.resolveSettings(caddy.NewReplacer())
					if value >= tc.least {
						if err != nil {
							t.Fatalf("the minimum is refused: %v", err)
						}
						return
					}
					want := fmt.Sprintf("%s: %s: must be at least %s", CodeProviderInvalidConfig, tc.field, tc.least)
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Fatalf("error = %v, want %q", err, want)
					}
				})
			}
		}
	}
}

// A scope listed twice in an application, in one line or across its
// argument and a scope line, is refused at load naming the application;
// the same scope in two applications is not a duplicate.
func TestDuplicateScopeIsRefused(t *testing.T) {
	const identity = "tenant_id t\n client_id 00000000-0000-4000-8000-0000000000c1\n client_secret s\n"
	for _, tc := range []struct{ name, caddyfile, json, want string }{
		{"one line", identity + "application orders-api api://orders/.default api://orders/.default\n",
			`{"applications": {"orders-api": {"scopes": ["api://orders/.default", "api://orders/.default"]}}}`,
			`application orders-api: scope: duplicate scope "api://orders/.default"`},
		{"argument and scope line", identity + "application orders-api api://orders/Orders.Read {\n scope api://orders/Orders.Write api://orders/Orders.Read\n }\n",
			`{"applications": {"orders-api": {"scopes": ["api://orders/Orders.Read", "api://orders/Orders.Write", "api://orders/Orders.Read"]}}}`,
			`application orders-api: scope: duplicate scope "api://orders/Orders.Read"`},
		{"two applications", identity + "application orders-api api://orders/.default\n application orders-copy api://orders/.default\n",
			`{"applications": {"orders-api": {"scopes": ["api://orders/.default"]}, "orders-copy": {"scopes": ["api://orders/.default"]}}}`, ""},
	} {
		fromCaddyfile := new(App)
		if err := fromCaddyfile.UnmarshalCaddyfile(caddyfile.NewTestDispenser("entra {\n " + tc.caddyfile + "}")); err != nil {
			t.Fatalf("%s: parsing the Caddyfile: %v", tc.name, err)
		}
		fromJSON := &App{IdentityConfig: IdentityConfig{TenantID: "t", ClientID: "00000000-0000-4000-8000-0000000000c1", ClientSecret: "s"}}
		if err := json.Unmarshal([]byte(tc.json), fromJSON); err != nil {
			t.Fatalf("%s: parsing the JSON: %v", tc.name, err)
		}
		for format, app := range map[string]*App{"caddyfile": fromCaddyfile, "json": fromJSON} {
			_, err := app.resolveSettings(caddy.NewReplacer())
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("%s, %s: refused: %v", tc.name, format, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), CodeProviderInvalidConfig+": "+tc.want)):
				t.Errorf("%s, %s: error = %v, want %q", tc.name, format, err, tc.want)
			}
		}
	}
}

// A token client tells the app's log, naming the application, of rotated
// certificate files that do not load (the last good certificate keeps
// signing): the operator learns of it before Entra refuses the old one.
func TestUnloadableRotatedCertificateIsLoggedWithItsApplication(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "orders"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	path := filepath.Join(t.TempDir(), "orders.pem")
	write := func(content []byte) {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})...))
	core, logs := observer.New(zapcore.DebugLevel)
	app := &App{
		IdentityConfig: IdentityConfig{TenantID: "contoso.example", ClientID: "00000000-0000-4000-8000-0000000000c1", ClientCertificate: &ClientCertificateConfig{Certificate: path}},
		Applications:   map[string]*Application{"orders-api": {Scopes: []string{"api://orders/.default"}}},
	}
	if err := app.ProvisionForTest(zap.New(core)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Cleanup() })

	write(certPEM) // rotated to a certificate without its key
	app.resolved[0].Client.CredentialFingerprint()
	warnings := logs.FilterMessageSnippet("the client certificate's files changed but do not load").AllUntimed()
	if len(warnings) != 1 || warnings[0].ContextMap()["application"] != "orders-api" || warnings[0].ContextMap()["field"] != "client_certificate" {
		t.Fatalf("warnings %v, want one naming application orders-api and client_certificate", warnings)
	}
}
