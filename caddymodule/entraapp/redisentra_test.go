package entraapp

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
)

// redisEntraApp is an app with a secret identity and a redis block using
// Entra authentication on url; adjust changes it.
func redisEntraApp(url string, adjust func(*RedisConfig)) *App {
	rc := &RedisConfig{URL: url, InsecurePlaintext: true, Entra: &RedisEntra{}}
	if adjust != nil {
		adjust(rc)
	}
	return &App{
		IdentityConfig: IdentityConfig{TenantID: "00000000-0000-4000-8000-000000000001",
			ClientID: "00000000-0000-4000-8000-0000000000c1", ClientSecret: "redis-entra-test-secret"},
		Redis:        rc,
		Applications: map[string]*Application{"orders-api": {Scopes: []string{"api://orders/.default"}}},
	}
}

func TestRedisEntraGivesTheStoreCredentials(t *testing.T) {
	for _, url := range []string{"rediss://redis.example:6380", "redis://127.0.0.1:6379", "redis://localhost:6379", "redis://[::1]:6379"} {
		s, err := redisEntraApp(url, func(rc *RedisConfig) { rc.Entra.MaxConnectionAge = caddy.Duration(3 * time.Second) }).
			resolveSettings(caddy.NewReplacer())
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if s.cache.Redis.Credentials == nil || s.cache.Redis.MaxConnectionAge != 3*time.Second || s.cache.RedisEntra == "" {
			t.Errorf("%s: credentials %v, max age %v, pool description %v", url, s.cache.Redis.Credentials != nil,
				s.cache.Redis.MaxConnectionAge, s.cache.RedisEntra != "")
		}
		if key, err := s.cache.poolKey(); err != nil || key == "" {
			t.Errorf("%s: pool key: %v", url, err)
		}
	}
	s, err := redisEntraApp("rediss://redis.example:6380", nil).resolveSettings(caddy.NewReplacer())
	if err != nil || s.cache.Redis.MaxConnectionAge != DefaultRedisMaxConnectionAge {
		t.Errorf("default max connection age: %v, %v", s.cache.Redis.MaxConnectionAge, err)
	}
}

// The cache, and its Redis store that authenticates with the redis entra
// identity, is pooled by a key that covers how that identity presents its
// credential: a reload that changes client_auth (post to basic) gets a
// store that asks for the Redis token the new way.
func TestRedisEntraPoolKeyCoversClientAuth(t *testing.T) {
	poolKey := func(clientAuth string) string {
		return redisEntraPoolKey(t, func(id *IdentityConfig) { id.ClientAuth = clientAuth })
	}
	if poolKey("") != poolKey("post") {
		t.Error("client_auth post, the default, changed the pool key")
	}
	if poolKey("post") == poolKey("basic") {
		t.Error("client_auth post and basic share a pool key: a reload to basic keeps the store that requests the Redis token with post")
	}
}

func TestRedisEntraRefusals(t *testing.T) {
	for _, tt := range []struct {
		name, url string
		adjust    func(*RedisConfig)
		want      string
	}{
		{"plaintext to another host", "redis://redis.example:6379", nil, "redis entra: requires TLS"},
		// Sentinels and cluster seeds on loopback may point to nodes elsewhere.
		{"plaintext to loopback sentinels", "", func(rc *RedisConfig) { rc.Addrs, rc.MasterName = []string{"127.0.0.1:26379"}, "mymaster" },
			"redis entra: requires TLS"},
		{"plaintext to loopback cluster seeds", "", func(rc *RedisConfig) { rc.Addrs = []string{"127.0.0.1:7000", "127.0.0.1:7001"} },
			"redis entra: requires TLS"},
		{"password", "rediss://redis.example:6380", func(rc *RedisConfig) { rc.Password = "p" }, "redis entra: excludes username and password"},
		{"password in the url", "rediss://u:p@redis.example:6380", nil, "redis entra: excludes username and password"},
		{"unknown application", "rediss://redis.example:6380", func(rc *RedisConfig) { rc.Entra.Application = "nope" }, "redis entra: application nope is not configured"},
		{"negative age", "rediss://redis.example:6380", func(rc *RedisConfig) { rc.Entra.MaxConnectionAge = -1 }, "redis entra max_connection_age: must not be negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := redisEntraApp(tt.url, tt.adjust).resolveSettings(caddy.NewReplacer())
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), CodeProviderInvalidConfig) {
				t.Fatalf("got %v, want %s with %q", err, CodeProviderInvalidConfig, tt.want)
			}
			if strings.Contains(err.Error(), "redis-entra-test-secret") {
				t.Error("the error shows the secret")
			}
		})
	}
}

func TestRedisEntraCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`redis rediss://redis.example:6380 {
		insecure_plaintext
		entra orders-api {
			max_connection_age 5m
		}
	}`)
	d.Next()
	rc, err := parseRedis(d)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Entra == nil || rc.Entra.Application != "orders-api" || time.Duration(rc.Entra.MaxConnectionAge) != 5*time.Minute {
		t.Errorf("parsed %+v", rc.Entra)
	}
	for _, bad := range []string{"entra a b", "entra {\n bogus 1\n}", "entra\n entra"} {
		d := caddyfile.NewTestDispenser("redis rediss://r:6380 {\n" + bad + "\n}")
		d.Next()
		if _, err := parseRedis(d); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// The start-up log names the Redis servers, never a user name or password.
func TestRedisAddrsNameNoCredentials(t *testing.T) {
	for _, tt := range []struct {
		opts redisstore.Options
		want []string
	}{
		{redisstore.Options{URL: "rediss://sidecar:s3cret@redis.example:6380/2"}, []string{"redis.example:6380"}},
		{redisstore.Options{Addrs: []string{"10.0.0.1:26379", "10.0.0.2:26379"}, MasterName: "m", Password: "s3cret"}, []string{"10.0.0.1:26379", "10.0.0.2:26379"}},
	} {
		if got := redisAddrs(&tt.opts); !slices.Equal(got, tt.want) {
			t.Errorf("redisAddrs = %v, want %v", got, tt.want)
		}
	}
}

// A key listed twice is refused (a rotation that forgot to change one),
// and a key of the wrong form says what is wanted, never the key.
func TestEncryptionKeyMistakes(t *testing.T) {
	const key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // base64 of 32 bytes
	for keys, want := range map[[2]string]string{
		{key, key}:            "redis encryption_key #2: the same key as #1",
		{key, "c2hvcnQta2V5"}: "redis encryption_key #2: tokencache: parsing encryption key: 9 bytes, want 32 (base64 of 32 random bytes",
	} {
		a := redisEntraApp("redis://127.0.0.1:6379", func(rc *RedisConfig) {
			rc.Entra, rc.InsecurePlaintext, rc.EncryptionKeys = nil, false, keys[:]
		})
		_, err := a.resolveSettings(caddy.NewReplacer())
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), keys[1]) {
			t.Errorf("keys %v: %v, want %q without the key", keys, err, want)
		}
	}
}

// TestRedisEntraWithSkipVerifyDoesNotLoad: the token would go to whatever
// answers at the address; the config is refused at load, naming redis.
func TestRedisEntraWithSkipVerifyDoesNotLoad(t *testing.T) {
	entraApp := `{"tenant_id": "00000000-0000-4000-8000-000000000001", "client_id": "00000000-0000-4000-8000-0000000000c1",
		"client_secret": "redis-entra-test-secret", "applications": {"a": {"scopes": ["api://a/.default"]}},
		"redis": {"url": "rediss://127.0.0.1:6380?skip_verify=true", "insecure_plaintext": true, "entra": {}}}`
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(`{"admin": {"disabled": true}, "apps": {"entra": `+entraApp+`}}`), &cfg); err != nil {
		t.Fatal(err)
	}
	err := caddy.Validate(&cfg)
	if err == nil || !strings.Contains(err.Error(), "redis") || !strings.Contains(err.Error(), "skip_verify") {
		t.Fatalf("got %v, want the config refused for skip_verify", err)
	}
}

// The kubelet rotates a federated token file about hourly: a reload after
// it keeps the cache (its store, tokens and refreshers) when redis entra
// authenticates with that federated identity.
func TestRedisEntraCacheIsKeptAcrossAFederatedTokenRotation(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "azure-identity-token")
	poolKey := func(token string) string {
		if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		return redisEntraPoolKey(t, func(id *IdentityConfig) { id.ClientSecret, id.FederatedTokenFile = "", tokenFile })
	}
	if poolKey("projected.token.one") != poolKey("projected.token.two") {
		t.Error("the kubelet's rotation of the federated token file changed the cache's pool key: a reload starts a new cache")
	}
}

// redisEntraPoolKey is the cache pool key of redisEntraApp on a rediss
// URL, its identity changed by adjust.
func redisEntraPoolKey(t *testing.T, adjust func(*IdentityConfig)) string {
	t.Helper()
	app := redisEntraApp("rediss://redis.example:6380", nil)
	adjust(&app.IdentityConfig)
	s, err := app.resolveSettings(caddy.NewReplacer())
	if err != nil {
		t.Fatal(err)
	}
	key, err := s.cache.poolKey()
	if err != nil {
		t.Fatal(err)
	}
	return key
}
