package integration

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

const (
	oboScope         = "https://graph.microsoft.com/User.Read"
	oboForeignTenant = "ffffffff-bbbb-4ccc-8ddd-eeeeeeeeeeee"
	oboEncryptionKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	oboClaims        = `{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`
)

// oboUpstream is the downstream API of on-behalf-of requests: it answers
// with the oid of the token it received (verified by the emulator), or
// with a claims challenge for the tokens it was told to challenge.
type oboUpstream struct {
	server    *httptest.Server
	emulator  *entratest.Emulator
	calls     atomic.Int64
	mu        sync.Mutex
	tokens    map[string]bool // every downstream token received
	challenge map[string]bool // oids whose tokens get a claims challenge
}

// caeChallenge is what the upstream answers a challenged user's token with,
// as Graph does under continuous access evaluation.
const caeChallenge = `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", ` +
	`client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZX19fQ=="`

func newOBOUpstream(t *testing.T, emulator *entratest.Emulator) *oboUpstream {
	u := &oboUpstream{emulator: emulator, tokens: map[string]bool{}, challenge: map[string]bool{}}
	u.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.calls.Add(1)
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		claims, err := emulator.Verify(token)
		if err != nil || len(r.Header.Values("Authorization")) != 1 {
			http.Error(w, "no valid token", http.StatusForbidden)
			return
		}
		u.mu.Lock()
		u.tokens[token] = true
		challenged := u.challenge[claims.ObjectID]
		u.mu.Unlock()
		if challenged {
			w.Header().Set("WWW-Authenticate", caeChallenge)
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":"InvalidAuthenticationToken"}}`))
			return
		}
		_, _ = w.Write([]byte(claims.ObjectID))
	}))
	t.Cleanup(u.server.Close)
	return u
}

func (u *oboUpstream) setChallenge(oid string, on bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.challenge[oid] = on
}

func (u *oboUpstream) downstreamTokens() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var tokens []string
	for token := range u.tokens {
		tokens = append(tokens, token)
	}
	return tokens
}

// oboConfig is a replica with the on-behalf-of application graph-as-user,
// sharing through Redis sealed with an encryption key.
func oboConfig() string {
	return sidecarConfig(testIdentity+`
		redis {env.TEST_REDIS_URL} {
			key_prefix `+testKeyPrefix+`
			encryption_key {env.TEST_REDIS_KEY}
		}
		application graph-as-user {
			scope `+oboScope+`
			on_behalf_of
		}`,
		route{Path: "/graph", Application: "graph-as-user"})
}

// oboUser issues a user's token for the middle tier (the sidecar's client).
func oboUser(t *testing.T, emulator *entratest.Emulator, oid, tenant string, lifetime time.Duration) string {
	t.Helper()
	token, err := emulator.IssueUserToken(entratest.UserToken{ObjectID: oid, TenantID: tenant,
		Audience: "api://" + testClientID, Lifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func withUserToken(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// TestOnBehalfOfFleet runs two replicas sharing a sealed Redis against the
// emulator: concurrent users make one exchange each, replica B reuses A's,
// refused tokens never reach Entra or downstream twice, challenges reach
// the client in Microsoft's forms, a downstream claims challenge drops the
// exchange fleet-wide, and Redis holds no token a reader can use or
// recognise.
func TestOnBehalfOfFleet(t *testing.T) {
	f := newFleet(t)
	if err := f.emulator.AddTenant(oboForeignTenant); err != nil {
		t.Fatal(err)
	}
	up := newOBOUpstream(t, f.emulator)
	env := append(f.env(testClientSecret), "TEST_UPSTREAM="+up.server.URL, "TEST_REDIS_KEY="+oboEncryptionKey)
	a := startSidecar(t, oboConfig(), env...)
	b := startSidecar(t, oboConfig(), env...)

	users := map[string]string{ // oid -> user token
		"0a0a0a0a-0000-4000-8000-00000000000a": "",
		"0b0b0b0b-0000-4000-8000-00000000000b": "",
	}
	var userTokens []string
	for oid := range users {
		users[oid] = oboUser(t, f.emulator, oid, "", 0)
		userTokens = append(userTokens, users[oid])
	}

	// 2 users x 200 concurrent requests: 2 exchanges, each user's token.
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for oid, token := range users {
		for range 200 {
			wg.Go(func() {
				got := send(t, a.URL+"/graph/v1.0/me", withUserToken(token))
				if got.Status != http.StatusOK || got.Body != oid {
					wrong.Add(1)
				}
			})
		}
	}
	wg.Wait()
	if n := wrong.Load(); n > 0 {
		t.Fatalf("%d of 400 requests did not reach downstream with their own user's token\nlogs:\n%s", n, a.logs())
	}
	if n := f.emulator.OnBehalfOfRequests(); n != 2 {
		t.Fatalf("2 users x 200 concurrent requests made %d exchanges, want 2", n)
	}

	// Replica B reuses A's exchanges.
	for oid, token := range users {
		if got := send(t, b.URL+"/graph/v1.0/me", withUserToken(token)); got.Status != http.StatusOK || got.Body != oid {
			t.Fatalf("replica B: %d %q, want the user's downstream token", got.Status, got.Body)
		}
	}
	if n := f.emulator.OnBehalfOfRequests(); n != 2 {
		t.Fatalf("replica B made its own exchange: %d in all, want 2", n)
	}

	// Refused locally: 401, no exchange, no downstream call.
	calls := up.calls.Load()
	for name, token := range map[string]string{
		"expired":        oboUser(t, f.emulator, "0c0c0c0c-0000-4000-8000-00000000000c", "", -time.Minute),
		"foreign tenant": oboUser(t, f.emulator, "0c0c0c0c-0000-4000-8000-00000000000c", oboForeignTenant, 0),
	} {
		got := send(t, a.URL+"/graph/v1.0/me", withUserToken(token))
		if got.Status != http.StatusUnauthorized || !strings.Contains(got.Body, "MICROSOFT_USER_TOKEN_INVALID") ||
			got.Header.Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
			t.Errorf("%s: %d %q %s, want 401 MICROSOFT_USER_TOKEN_INVALID", name, got.Status, got.Header.Get("WWW-Authenticate"), got.Body)
		}
	}
	if got := send(t, a.URL+"/graph/v1.0/me", nil); got.Status != http.StatusUnauthorized || !strings.Contains(got.Body, "MICROSOFT_USER_TOKEN_MISSING") {
		t.Errorf("no token: %d %s, want 401 MICROSOFT_USER_TOKEN_MISSING", got.Status, got.Body)
	}
	if n, c := f.emulator.OnBehalfOfRequests(), up.calls.Load(); n != 2 || c != calls {
		t.Fatalf("refused tokens made %d exchanges and %d downstream calls, want none", n-2, c-calls)
	}

	// A claims challenge reaches the client in the platform's form; the
	// refused token, replayed 1,000 times, costs one exchange.
	challenged := "0d0d0d0d-0000-4000-8000-00000000000d"
	f.emulator.ChallengeUser(challenged, oboClaims)
	challengedToken := oboUser(t, f.emulator, challenged, "", 0)
	wantChallenge := `Bearer realm="", authorization_uri="` + f.issuer + "/" + f.emulator.TenantID() +
		`/oauth2/v2.0/authorize", error="insufficient_claims", claims="` + base64.StdEncoding.EncodeToString([]byte(oboClaims)) + `"`
	var wrongAnswers atomic.Int64
	var next atomic.Int64
	for range 16 {
		wg.Go(func() {
			for next.Add(1) <= 1000 {
				got := send(t, a.URL+"/graph/v1.0/me", withUserToken(challengedToken))
				if got.Status != http.StatusUnauthorized || got.Header.Get("WWW-Authenticate") != wantChallenge ||
					!strings.Contains(got.Body, "MICROSOFT_INTERACTION_REQUIRED") {
					wrongAnswers.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := wrongAnswers.Load(); n > 0 {
		got := send(t, a.URL+"/graph/v1.0/me", withUserToken(challengedToken))
		t.Fatalf("%d of 1,000 answers were not the claims challenge; one: %d %q %s\nwant %s", n, got.Status,
			got.Header.Get("WWW-Authenticate"), got.Body, wantChallenge)
	}
	if n := f.emulator.OnBehalfOfRequests(); n != 3 {
		t.Fatalf("a refused token replayed 1,000 times made %d exchanges, want 1", n-2)
	}
	if c := up.calls.Load(); c != calls {
		t.Fatalf("a refused token reached downstream %d times", c-calls)
	}

	// A downstream claims challenge reaches the client untouched, and the
	// exchange is dropped on both replicas.
	var userA, tokenA string
	for oid, token := range users {
		userA, tokenA = oid, token
		break
	}
	up.setChallenge(userA, true)
	got := send(t, a.URL+"/graph/v1.0/me", withUserToken(tokenA))
	if got.Status != http.StatusUnauthorized || got.Header.Get("WWW-Authenticate") != caeChallenge ||
		got.Body != `{"error":{"code":"InvalidAuthenticationToken"}}` {
		t.Fatalf("downstream's claims challenge reached the client as %d %q %s", got.Status, got.Header.Get("WWW-Authenticate"), got.Body)
	}
	up.setChallenge(userA, false)
	waitFor(t, "replica B to drop the challenged exchange", 10*time.Second, func() error {
		before := f.emulator.OnBehalfOfRequests()
		if got := send(t, b.URL+"/graph/v1.0/me", withUserToken(tokenA)); got.Status != http.StatusOK {
			t.Fatalf("replica B after the drop: %d %s\nlogs of A:\n%s\nlogs of B:\n%s", got.Status, got.Body, a.logs(), b.logs())
		}
		if f.emulator.OnBehalfOfRequests() == before {
			return errString("replica B still holds the exchange")
		}
		return nil
	})

	// Consent missing: 403 in Microsoft.Identity.Web's form.
	f.emulator.SetConsent(testClientID, oboScope, false)
	got = send(t, a.URL+"/graph/v1.0/me", withUserToken(oboUser(t, f.emulator, "0e0e0e0e-0000-4000-8000-00000000000e", "", 0)))
	wantConsent := `Bearer consentUri="` + f.issuer + "/" + f.emulator.TenantID() + "/oauth2/v2.0/authorize?client_id=" + testClientID +
		`&response_type=code&scope=https%3A%2F%2Fgraph.microsoft.com%2FUser.Read", claims="", scopes="` + oboScope + `", proposedAction="consent"`
	if got.Status != http.StatusForbidden || got.Header.Get("WWW-Authenticate") != wantConsent || !strings.Contains(got.Body, "MICROSOFT_CONSENT_REQUIRED") {
		t.Errorf("consent missing: %d %q %s\nwant 403 %s", got.Status, got.Header.Get("WWW-Authenticate"), got.Body, wantConsent)
	}

	// Redis holds no user token or downstream token, whole or in part, and
	// no key or value a reader could match a user token with (its plain
	// SHA-256).
	userTokens = append(userTokens, challengedToken)
	var secrets []string
	for _, token := range userTokens {
		sum := sha256.Sum256([]byte(token))
		secrets = append(secrets, token, hex.EncodeToString(sum[:])[:16], base64.RawURLEncoding.EncodeToString(sum[:])[:16])
		secrets = append(secrets, strings.Split(token, ".")[1:]...)
	}
	for _, token := range up.downstreamTokens() {
		secrets = append(secrets, token)
		secrets = append(secrets, strings.Split(token, ".")[1:]...)
	}
	ctx := context.Background()
	keys, err := f.rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	entries := 0
	for _, key := range keys {
		value, _ := f.rdb.Get(ctx, key).Result()
		if strings.HasSuffix(key, ":token") {
			entries++
		}
		for _, secret := range secrets {
			if strings.Contains(key, secret) || strings.Contains(value, secret) {
				t.Errorf("Redis key %s or its value holds a user or downstream token, or the plain hash of one", key)
			}
		}
		if strings.HasSuffix(key, ":token") && !strings.HasPrefix(value, "v1.") {
			t.Errorf("Redis entry %s is not sealed", key)
		}
	}
	if entries == 0 {
		t.Error("Redis holds no exchange: the fleet shared nothing")
	}

	// Metrics per application, with no user in any label.
	text := scrapeMetrics(t, a)
	series := `caddy_entra_on_behalf_of_total{application="graph-as-user",result="exchanged"}`
	if v := metricValue(t, text, series); v != 2 {
		t.Errorf("%s = %v, want 2 (two users; the refused tokens are rejections)", series, v)
	}
	if v := metricValue(t, text, `caddy_entra_on_behalf_of_total{application="graph-as-user",result="hit"}`); v < 390 {
		t.Errorf("hits = %v, want about 400", v)
	}
	if v := metricValue(t, text, `caddy_entra_on_behalf_of_total{application="graph-as-user",result="rejected"}`); v != 1001 {
		t.Errorf("rejections = %v, want 1001 (the claims challenge 1,000 times, the consent once)", v)
	}
	if v := metricValue(t, text, `caddy_entra_requests_total{application="graph-as-user",result="MICROSOFT_INTERACTION_REQUIRED"}`); v != 1000 {
		t.Errorf("challenges answered = %v, want 1000", v)
	}
	for oid := range users {
		if strings.Contains(text, oid) || strings.Contains(a.logs(), users[oid]) {
			t.Errorf("the metrics name a user, or the logs hold a user's token")
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestOnBehalfOfCustomHeaderIsKeptOutOfCaddysLogs: Caddy clones each
// request for its logs before any handler runs and masks only
// Authorization, Cookie and Proxy-Authorization, so a custom on_behalf_of
// header would put users' tokens in its error log (a failing downstream)
// and access log. The load warns, and with the filters docs/on-behalf-of.md
// gives, the user's token appears in neither log.
func TestOnBehalfOfCustomHeaderIsKeptOutOfCaddysLogs(t *testing.T) {
	f := newFleet(t)
	closed := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens: 502
	config := `{
	admin 127.0.0.1:%[2]d
	log default {
		format filter {
			wrap json
			fields {
				request>headers>X-User-Token delete
			}
		}
	}
	entra {
` + testIdentity + `
		application graph-as-user {
			scope ` + oboScope + `
			on_behalf_of {
				header X-User-Token
			}
		}
	}
}

:%[1]d {
	bind 127.0.0.1
	log {
		format filter {
			wrap json
			fields {
				request>headers>X-User-Token delete
			}
		}
	}
	handle_path /graph/* {
		entra_token graph-as-user
		reverse_proxy {$TEST_UPSTREAM}
	}
}
`
	replica := startSidecar(t, config, append(f.env(testClientSecret), "TEST_UPSTREAM="+closed)...)
	if !strings.Contains(replica.logs(), "on_behalf_of header: Caddy's error and access logs show this header") {
		t.Errorf("no load warning about the custom header:\n%s", replica.logs())
	}
	userToken := oboUser(t, f.emulator, "0c0c0c0c-0000-4000-8000-00000000000c", "", 0)
	got := send(t, replica.URL+"/graph/v1.0/me", http.Header{"X-User-Token": {"Bearer " + userToken}})
	if got.Status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502 from the closed downstream: %s", got.Status, got.Body)
	}
	if n := f.emulator.OnBehalfOfRequests(); n != 1 {
		t.Fatalf("%d exchanges, want 1", n)
	}
	waitFor(t, "the access and error log lines", 5*time.Second, func() error {
		if !strings.Contains(replica.logs(), `"logger":"http.log.access`) || !strings.Contains(replica.logs(), `"logger":"http.log.error`) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if payload := strings.Split(userToken, ".")[1]; strings.Contains(replica.logs(), payload) {
		t.Errorf("the user's token is in Caddy's logs:\n%s", replica.logs())
	}
}

// piecesEchoingEndpoint is the emulator behind a token endpoint that refuses
// every request 401 invalid_client, its error_description echoing pieces of
// what it was sent (a verbose or hostile endpoint): the client secret's
// first 8 characters, the user assertion's first 150, its signature's first
// 40 and its payload's first 60.
type piecesEchoingEndpoint struct {
	emulator *entratest.Emulator
	refused  atomic.Int64
}

func (e *piecesEchoingEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/token") {
		e.emulator.ServeHTTP(w, r)
		return
	}
	e.refused.Add(1)
	_ = r.ParseForm()
	secret, assertion := r.PostForm.Get("client_secret"), r.PostForm.Get("assertion")
	desc := "AADSTS7000215: secret starting '" + secret[:min(8, len(secret))] + "...'"
	if parts := strings.Split(assertion, "."); len(parts) == 3 {
		desc += fmt.Sprintf("; assertion '%s...'; signature '%s'; payload '%s'",
			assertion[:min(150, len(assertion))], parts[2][:min(40, len(parts[2]))], parts[1][:min(60, len(parts[1]))])
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = fmt.Fprintf(w, `{"error":"invalid_client","error_description":%q,"error_codes":[7000215],`+
		`"trace_id":"11111111-2222-3333-4444-555555555555","correlation_id":"66666666-2222-3333-4444-555555555555"}`, desc)
}

// TestOnBehalfOfBackoffCarriesNoPieceOfAUsersToken: an on-behalf-of
// invalid_client refusal becomes the tenant's backoff, whose message answers
// the next user; a token endpoint that echoed pieces of the first user's
// token (or of the client secret) gets none of them into that message, the
// first user's answer, the admin API or the logs.
func TestOnBehalfOfBackoffCarriesNoPieceOfAUsersToken(t *testing.T) {
	emulator, err := entratest.New(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	endpoint := &piecesEchoingEndpoint{emulator: emulator}
	server := httptest.NewServer(endpoint)
	t.Cleanup(server.Close)
	emulator.AddClient(testClientID, testClientSecret)
	up := newUpstream(t)
	replica := startSidecar(t, sidecarConfig(testIdentity+`
		application graph-as-user {
			scope `+oboScope+`
			on_behalf_of
		}`, route{Path: "/graph", Application: "graph-as-user"}),
		"TEST_AUTHORITY_HOST="+server.URL, "TEST_TENANT_ID="+emulator.TenantID(), "TEST_CLIENT_ID="+testClientID,
		"TEST_CLIENT_SECRET="+testClientSecret, "TEST_UPSTREAM="+up.server.URL)
	alice := oboUser(t, emulator, "0a0a0a0a-0000-4000-8000-00000000000a", "", 0)
	bob := oboUser(t, emulator, "0b0b0b0b-0000-4000-8000-00000000000b", "", 0)

	first := send(t, replica.URL+"/graph/me", withUserToken(alice))
	second := send(t, replica.URL+"/graph/me", withUserToken(bob))
	if n := endpoint.refused.Load(); n != 1 || second.Status != first.Status {
		t.Fatalf("%d token requests, answers %d then %d: want bob answered by the backoff alice's refusal set\nalice: %s\nbob: %s",
			n, first.Status, second.Status, first.Body, second.Body)
	}
	if !strings.Contains(second.Body, "[REDACTED]") {
		t.Errorf("bob's answer %q does not show the masked echo", second.Body)
	}
	admin := send(t, replica.AdminURL+"/entra/tokens", nil)
	aliceParts := strings.Split(alice, ".")
	for where, text := range map[string]string{"alice's answer": first.Body, "bob's answer": second.Body,
		"the admin API": admin.Body, "the logs": replica.logs()} {
		for what, piece := range map[string]string{"alice's token": alice[:150], "alice's signature": aliceParts[2][:24],
			"alice's payload": aliceParts[1][:24], "the client secret": testClientSecret[:8]} {
			if strings.Contains(text, piece) {
				t.Errorf("%s carries a piece of %s", where, what)
			}
		}
	}
}
