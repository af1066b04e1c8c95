package sdktest

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// oidcResource is the resource indicator (RFC 8707) of the oidc-provider
// tests: its tokens are JWTs with this aud.
const oidcResource = "https://orders.example"

// oidcSecrets hold what application/x-www-form-urlencoded changes, by
// application name. RFC 6749 (appendix A.2) allows only VSCHAR (printable
// ASCII and space) in a client secret, and oidc-provider enforces it, so
// the non-ASCII secrets are tested against the emulator (entra and
// integration tests) only. Placeholders are trimmed: no secret here starts
// or ends with a space.
var oidcSecrets = map[string]string{
	"plus":    "a+b+c~Zx8Q",
	"percent": "100%25%-sure%",
	"colon":   "user:pass:word",
	"equals":  "base64ish==",
	"spaces":  "inner and more spaces",
	"all":     "+%:= &?/#\"\\'",
}

// oidcProvider is panva/oidc-provider running js/oidcprovider.mjs.
type oidcProvider struct {
	issuer, tokenEndpoint string
	proc                  *process
	client                *http.Client // reaches the provider; nil: http.DefaultClient
}

// startOIDCProvider runs oidc-provider on a free loopback port with one
// client_secret_basic client per entry of clients (client ID -> secret).
func startOIDCProvider(t *testing.T, node string, clients map[string]string) *oidcProvider {
	t.Helper()
	type client struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	var list []client
	for id, secret := range clients {
		list = append(list, client{id, secret})
	}
	registered, _ := json.Marshal(list)
	port := freePort(t)
	proc := startProcess(t, []string{"OIDC_CLIENTS=" + string(registered)}, node,
		filepath.Join(jsDir, "oidcprovider.mjs"), fmt.Sprint(port), oidcResource)
	p := &oidcProvider{proc: proc}
	waitFor(t, "oidc-provider", 30*time.Second, func() error {
		if proc.Exited() {
			t.Fatalf("oidc-provider exited:\n%s", proc.Output.String())
		}
		// The line may share the output with the provider's warnings on
		// stderr, written at the same time: look for the object itself.
		output := proc.Output.String()
		if i := strings.Index(output, `{"issuer"`); i >= 0 {
			if end := strings.Index(output[i:], "}"); end >= 0 {
				var started struct {
					Issuer        string `json:"issuer"`
					TokenEndpoint string `json:"token_endpoint"`
				}
				if json.Unmarshal([]byte(output[i:i+end+1]), &started) == nil && started.TokenEndpoint != "" {
					p.issuer, p.tokenEndpoint = started.Issuer, started.TokenEndpoint
					return nil
				}
			}
		}
		return fmt.Errorf("not listening yet; its output so far:\n%s", output)
	})
	return p
}

// issued counts the tokens oidc-provider issued to clientID.
func (p *oidcProvider) issued(clientID string) int {
	return strings.Count(p.proc.Output.String(), "token issued to "+clientID+"\n")
}

// verify checks token's RS256 signature with oidc-provider's published
// keys and returns its claims.
func (p *oidcProvider) verify(t *testing.T, token string) map[string]any {
	t.Helper()
	client := p.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Get(p.issuer + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jwks struct {
		Keys []struct{ Kid, N, E string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil || len(jwks.Keys) != 1 {
		t.Fatalf("jwks: %v (%d keys)", err, len(jwks.Keys))
	}
	n, errN := base64.RawURLEncoding.DecodeString(jwks.Keys[0].N)
	e, errE := base64.RawURLEncoding.DecodeString(jwks.Keys[0].E)
	parts := strings.Split(token, ".")
	if errN != nil || errE != nil || len(parts) != 3 {
		t.Fatal("the upstream's token is not a JWS of oidc-provider's key")
	}
	key := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	signature, _ := base64.RawURLEncoding.DecodeString(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], signature); err != nil {
		t.Fatalf("the upstream's token is not signed by oidc-provider: %v", err)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// oidcCaddyfile is one replica whose token endpoint is oidc-provider's:
// %[1]d the site port, %[2]d the admin port, %[3]s the applications and
// %[4]s the routes. Replicas share a real redis-server in plaintext, so
// each checks the other's records by their claims (client_id, exp).
const oidcCaddyfile = `{
	admin 127.0.0.1:%[2]d
	entra {
		token_endpoint {env.TEST_TOKEN_ENDPOINT}
		client_id      sidecar-default
		client_secret  {env.TEST_SECRET_DEFAULT}
		client_auth    basic
		token_request_param resource ` + oidcResource + `
		redis {env.TEST_REDIS_URL} {
			key_prefix oidc:
			insecure_plaintext
		}
%[3]s	}
}

:%[1]d {
	bind 127.0.0.1
%[4]s	respond 404
}
`

// The real sidecar against panva/oidc-provider, a third-party OAuth 2.0
// server that authenticates clients with client_secret_basic only: each
// awkward secret gets its application a token (the provider's own JWT,
// checked with its keys) injected upstream; two replicas sharing Redis in
// plaintext make one token request per application (tokens without
// Entra's claims are checked by client_id); a wrong secret answers 502
// MICROSOFT_TOKEN_REQUEST_FAILED; no secret reaches the logs.
func TestClientSecretBasicAgainstOIDCProvider(t *testing.T) {
	node := requireNode(t)
	f := newFleet(t)
	names := make([]string, 0, len(oidcSecrets))
	for name := range oidcSecrets {
		names = append(names, name)
	}
	sort.Strings(names)
	clients := map[string]string{"sidecar-default": "default secret+with:all%=", "sidecar-wrong": "the-right-one"}
	env := []string{"TEST_SECRET_DEFAULT=" + clients["sidecar-default"], "TEST_SECRET_WRONG=wrong+secret:%", "TEST_REDIS_URL=" + f.redisURL}
	var applications, routes strings.Builder
	for _, name := range append([]string{"default", "wrong"}, names...) {
		clientID := "sidecar-" + name
		fmt.Fprintf(&applications, "\t\tapplication %s orders:read {\n", name)
		if name != "default" {
			if name != "wrong" {
				clients[clientID] = oidcSecrets[name]
				env = append(env, "TEST_SECRET_"+strings.ToUpper(name)+"="+oidcSecrets[name])
			}
			// Its own client at the default token endpoint: it takes
			// client_auth basic from the default identity.
			fmt.Fprintf(&applications, "\t\t\tclient_id %s\n\t\t\tclient_secret {env.TEST_SECRET_%s}\n\t\t\ttoken_request_param resource %s\n",
				clientID, strings.ToUpper(name), oidcResource)
		}
		applications.WriteString("\t\t}\n")
		fmt.Fprintf(&routes, "\thandle_path /%s/* {\n\t\tentra_token %s\n\t\treverse_proxy {$TEST_UPSTREAM}\n\t}\n", name, name)
	}
	provider := startOIDCProvider(t, node, clients)

	var mu sync.Mutex
	var injected []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		injected = append(injected, r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	t.Cleanup(upstream.Close)
	env = append(env, "TEST_TOKEN_ENDPOINT="+provider.tokenEndpoint, "TEST_UPSTREAM="+upstream.URL)
	replicas := []*sidecar{startOIDCReplica(t, applications.String(), routes.String(), env), startOIDCReplica(t, applications.String(), routes.String(), env)}

	var tokens []string
	for _, name := range append([]string{"default"}, names...) {
		for i, replica := range replicas {
			resp, err := http.Get(replica.URL + "/" + name + "/orders")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s via replica %d: status %d, body %s\nsidecar logs:\n%s\noidc-provider:\n%s", name, i, resp.StatusCode, body,
					replica.proc.Output.String(), provider.proc.Output.String())
			}
			mu.Lock()
			token, ok := strings.CutPrefix(injected[len(injected)-1], "Bearer ")
			mu.Unlock()
			if !ok {
				t.Fatalf("%s: the upstream got no bearer token", name)
			}
			claims := provider.verify(t, token)
			if claims["client_id"] != "sidecar-"+name || claims["aud"] != oidcResource || claims["iss"] != provider.issuer {
				t.Errorf("%s: token claims client_id %v aud %v iss %v; want sidecar-%s %s %s",
					name, claims["client_id"], claims["aud"], claims["iss"], name, oidcResource, provider.issuer)
			}
			tokens = append(tokens, token)
		}
		if n := provider.issued("sidecar-" + name); n != 1 {
			t.Errorf("%s: oidc-provider issued %d tokens to two replicas sharing Redis, want 1\n%s", name, n, replicas[1].proc.Output.String())
		}
	}

	resp, err := http.Get(replicas[0].URL + "/wrong/orders")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "MICROSOFT_TOKEN_REQUEST_FAILED") || !strings.Contains(string(body), "invalid_client") {
		t.Errorf("wrong secret: status %d, body %s; want 502 MICROSOFT_TOKEN_REQUEST_FAILED (invalid_client)", resp.StatusCode, body)
	}

	secrets := []string{"wrong+secret:%", url.QueryEscape("wrong+secret:%")}
	for _, secret := range clients {
		secrets = append(secrets, secret, url.QueryEscape(secret))
	}
	for _, replica := range replicas {
		logs := replica.proc.Output.String()
		for i, secret := range secrets {
			if strings.Contains(logs, secret) {
				t.Errorf("secret #%d appears in the sidecar logs", i)
			}
		}
		for _, token := range tokens {
			if strings.Contains(logs, token[strings.LastIndex(token, ".")+1:]) {
				t.Error("a token appears in the sidecar logs")
			}
		}
	}
}

// startOIDCReplica runs the Caddy binary on oidcCaddyfile.
func startOIDCReplica(t *testing.T, applications, routes string, env []string) *sidecar {
	t.Helper()
	return startReplicaWith(t, oidcCaddyfile, env, applications, routes)
}
