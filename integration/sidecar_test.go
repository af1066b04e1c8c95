package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

const (
	testClientID     = "11111111-0000-4000-8000-00000000c11e"
	testClientSecret = "integration-secret-Do-Not-Log-7f3a9c"
	testScope        = "api://orders/.default"
	testKeyPrefix    = "itest:"
)

// testIdentity is the entra block's identity, every value from the
// environment (see fleet.env).
const testIdentity = `		authority_host {env.TEST_AUTHORITY_HOST}
		tenant_id      {env.TEST_TENANT_ID}
		client_id      {env.TEST_CLIENT_ID}
		client_secret  {env.TEST_CLIENT_SECRET}`

// sidecarGlobalOptions is one replica's global options: %[2]d is the admin
// port; everything else comes from the environment, as in production.
const sidecarGlobalOptions = `{
	admin 127.0.0.1:%[2]d
	debug
	entra {
		hosts sidecar
` + testIdentity + `
		redis {env.TEST_REDIS_URL} {
			key_prefix ` + testKeyPrefix + `
			insecure_plaintext
		}
		application orders-api {
			scope ` + testScope + `
		}
	}
}
`

// sidecarCaddyfile is one replica's config: %[1]d is the site port, %[2]d the
// admin port.
const sidecarCaddyfile = sidecarGlobalOptions + `
:%[1]d {
	bind 127.0.0.1
	handle_path /orders/* {
		entra_token orders-api
		reverse_proxy {$TEST_UPSTREAM}
	}
}
`

// fleet is everything a sidecar needs: the token endpoint, Redis and the
// downstream API.
type fleet struct {
	emulator *entratest.Emulator
	issuer   string
	redis    *redisServer
	rdb      *redis.Client
	upstream *upstream
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	emulator, server, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	emulator.AddClient(testClientID, testClientSecret)
	r := startRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { rdb.Close() })
	return &fleet{emulator: emulator, issuer: server.URL, redis: r, rdb: rdb, upstream: newUpstream(t)}
}

// env is the replica environment, with secret as the client secret.
func (f *fleet) env(secret string) []string {
	return []string{
		"TEST_AUTHORITY_HOST=" + f.issuer,
		"TEST_TENANT_ID=" + f.emulator.TenantID(),
		"TEST_CLIENT_ID=" + testClientID,
		"TEST_CLIENT_SECRET=" + secret,
		"TEST_REDIS_URL=" + f.redis.URL,
		"TEST_UPSTREAM=" + f.upstream.server.URL,
	}
}

// startReplica starts one more sidecar replica of the fleet.
func (f *fleet) startReplica(t *testing.T) *sidecar {
	return startSidecar(t, sidecarCaddyfile, f.env(testClientSecret)...)
}

// records returns the token records under the test key prefix, by key.
func (f *fleet) records(t *testing.T) map[string]map[string]any {
	t.Helper()
	ctx := context.Background()
	keys, err := f.rdb.Keys(ctx, testKeyPrefix+"*:token").Result()
	if err != nil {
		t.Fatal(err)
	}
	records := make(map[string]map[string]any)
	for _, key := range keys {
		raw, err := f.rdb.Get(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		var record map[string]any
		if err := json.Unmarshal([]byte(raw), &record); err != nil {
			t.Fatalf("record %s is not JSON: %v", key, err)
		}
		records[key] = record
	}
	return records
}

// bearer returns the single bearer token of an Authorization header list.
func bearer(t *testing.T, values []string) string {
	t.Helper()
	if len(values) != 1 || !strings.HasPrefix(values[0], "Bearer ") {
		t.Fatalf("upstream got Authorization %d value(s), want exactly one Bearer token", len(values))
	}
	return strings.TrimPrefix(values[0], "Bearer ")
}

// assertNoSecrets fails when a replica's logs hold the secret or a token.
func assertNoSecrets(t *testing.T, logs string, tokens ...string) {
	t.Helper()
	if strings.Contains(logs, testClientSecret) {
		t.Error("the client secret appears in the sidecar logs")
	}
	for _, token := range tokens {
		if token != "" && strings.Contains(logs, token) {
			t.Error("an access token appears in the sidecar logs")
		}
		// A JWT's signature alone is enough to identify a leak.
		if i := strings.LastIndex(token, "."); i > 0 && strings.Contains(logs, token[i+1:]) {
			t.Error("an access token signature appears in the sidecar logs")
		}
	}
}

func TestTwoReplicasShareOneToken(t *testing.T) {
	f := newFleet(t)
	replicas := []*sidecar{f.startReplica(t), f.startReplica(t)}

	const perReplica = 25
	var wg sync.WaitGroup
	statuses := make(chan int, 2*perReplica)
	for _, replica := range replicas {
		for range perReplica {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, _ := get(t, replica.URL+"/orders/v1/items", nil)
				statuses <- status
			}()
		}
	}
	wg.Wait()
	close(statuses)
	for status := range statuses {
		if status != http.StatusOK {
			t.Fatalf("client got status %d, want 200", status)
		}
	}

	if got := f.emulator.TokenRequests(); got != 1 {
		t.Errorf("token endpoint got %d requests from 2 replicas x %d requests, want 1", got, perReplica)
	}
	seen := f.upstream.requests()
	if len(seen) != 2*perReplica {
		t.Fatalf("upstream got %d requests, want %d", len(seen), 2*perReplica)
	}
	token := bearer(t, seen[0])
	for _, values := range seen {
		if got := bearer(t, values); got != token {
			t.Fatal("replicas injected different tokens; want the one shared token")
		}
	}
	claims, err := f.emulator.Verify(token)
	if err != nil {
		t.Fatalf("injected token does not verify: %v", err)
	}
	if claims.Audience != strings.TrimSuffix(testScope, "/.default") || claims.AppID != testClientID {
		t.Errorf("token has aud %q appid %q, want %q %q", claims.Audience, claims.AppID, strings.TrimSuffix(testScope, "/.default"), testClientID)
	}

	records := f.records(t)
	if len(records) != 1 {
		t.Fatalf("redis holds %d token records, want 1", len(records))
	}
	for key, record := range records {
		for _, field := range []string{"id", "applicationName", "accessToken", "accessTokenExpiresAt", "scope", "createdAt", "updatedAt"} {
			if _, ok := record[field]; !ok {
				t.Errorf("record %s lacks field %q", key, field)
			}
		}
		if record["accessToken"] != token || record["applicationName"] != "orders-api" || record["scope"] != testScope {
			t.Errorf("record %s: applicationName %v scope %v, token matches: %v", key, record["applicationName"], record["scope"], record["accessToken"] == token)
		}
		if _, err := time.Parse(time.RFC3339, fmt.Sprint(record["accessTokenExpiresAt"])); err != nil {
			t.Errorf("accessTokenExpiresAt is not RFC 3339: %v", err)
		}
	}
	for _, replica := range replicas {
		assertNoSecrets(t, replica.logs(), token)
	}
}

func TestClientAuthorizationIsReplaced(t *testing.T) {
	f := newFleet(t)
	replica := f.startReplica(t)

	header := http.Header{"Authorization": {"Basic dXNlcjpwYXNz", "Bearer client-forged-token"}}
	status, body := get(t, replica.URL+"/orders/v1/items", header)
	if status != http.StatusOK {
		t.Fatalf("status %d, body %s", status, body)
	}
	seen := f.upstream.requests()
	if len(seen) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(seen))
	}
	token := bearer(t, seen[0])
	if strings.Contains(token, "client-forged-token") {
		t.Fatal("the client's Authorization reached the upstream")
	}
	if _, err := f.emulator.Verify(token); err != nil {
		t.Fatalf("upstream got a token the emulator did not issue: %v", err)
	}
	assertNoSecrets(t, replica.logs(), token)

	// The admin API shows the placeholder, never the resolved secret.
	_, config := get(t, replica.AdminURL+"/config/", nil)
	if !strings.Contains(config, "{env.TEST_CLIENT_SECRET}") || strings.Contains(config, testClientSecret) {
		t.Errorf("admin GET /config/ must show the secret's placeholder, not the secret")
	}
}

func TestRecordInsideRefreshWindowIsRefreshedInPlace(t *testing.T) {
	f := newFleet(t)
	first := f.startReplica(t)
	if status, body := get(t, first.URL+"/orders/a", nil); status != http.StatusOK {
		t.Fatalf("status %d, body %s", status, body)
	}
	records := f.records(t)
	if len(records) != 1 {
		t.Fatalf("redis holds %d records, want 1", len(records))
	}
	var key string
	var record map[string]any
	for key, record = range records {
	}
	// Age the shared record: a genuine token with 30 s left (inside the 60 s
	// refresh window), recorded with its exp, so that it passes the token
	// checks.
	f.emulator.SetTokenLifetime(30 * time.Second)
	oldToken := foreignToken(t, f.issuer, f.emulator.TenantID(), testClientID, testClientSecret)
	f.emulator.SetTokenLifetime(entratest.DefaultTokenLifetime)
	exp, ok := jwtExp(oldToken)
	if !ok {
		t.Fatal("the emulator's token has no exp")
	}
	createdAt := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	record["accessToken"] = oldToken
	record["accessTokenExpiresAt"] = exp.UTC().Format(time.RFC3339)
	record["createdAt"] = createdAt.Format(time.RFC3339)
	aged, _ := json.Marshal(record)
	if err := f.rdb.Set(context.Background(), key, aged, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}

	// A new replica has nothing in memory: it must see the aged record,
	// refuse it and refresh the same record.
	second := f.startReplica(t)
	if status, body := get(t, second.URL+"/orders/b", nil); status != http.StatusOK {
		t.Fatalf("status %d, body %s", status, body)
	}
	seen := f.upstream.requests()
	newToken := bearer(t, seen[len(seen)-1])
	if newToken == oldToken {
		t.Fatal("a token with 30 s left was injected; want a refreshed one")
	}
	if got := f.emulator.TokenRequests(); got != 3 {
		t.Errorf("token endpoint got %d requests, want 3 (first fetch, the aged token, and one refresh)", got)
	}
	after := f.records(t)
	refreshed, ok := after[key]
	if !ok || len(after) != 1 {
		t.Fatalf("after refresh redis holds %d records (same key: %v), want the same single record", len(after), ok)
	}
	if refreshed["accessToken"] != newToken {
		t.Error("the record does not hold the refreshed token")
	}
	if refreshed["createdAt"] != createdAt.Format(time.RFC3339) {
		t.Errorf("createdAt changed from %s to %v; a refresh updates the record in place", createdAt.Format(time.RFC3339), refreshed["createdAt"])
	}
	updatedAt, err := time.Parse(time.RFC3339, fmt.Sprint(refreshed["updatedAt"]))
	if err != nil || time.Since(updatedAt) > time.Minute {
		t.Errorf("updatedAt %v is not the refresh time", refreshed["updatedAt"])
	}
	expiresAt, err := time.Parse(time.RFC3339, fmt.Sprint(refreshed["accessTokenExpiresAt"]))
	if err != nil || time.Until(expiresAt) < 30*time.Minute {
		t.Errorf("refreshed record expires at %v, want about an hour from now", refreshed["accessTokenExpiresAt"])
	}
	assertNoSecrets(t, first.logs()+second.logs(), oldToken, newToken)
}

func TestWrongSecretAnswers502WithEntraError(t *testing.T) {
	f := newFleet(t)
	replica := startSidecar(t, sidecarCaddyfile, f.env("wrong-"+testClientSecret)...)

	status, body := get(t, replica.URL+"/orders/v1/items", nil)
	if status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502; body %s", status, body)
	}
	var answer struct{ Code, Message string }
	if err := json.Unmarshal([]byte(body), &answer); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, body)
	}
	if answer.Code != "MICROSOFT_TOKEN_REQUEST_FAILED" {
		t.Errorf("code %q, want MICROSOFT_TOKEN_REQUEST_FAILED", answer.Code)
	}
	for _, want := range []string{"invalid_client", "7000215", "trace_id"} {
		if !strings.Contains(answer.Message, want) {
			t.Errorf("message %q lacks %q", answer.Message, want)
		}
	}
	if strings.Contains(body, testClientSecret) {
		t.Error("the error body holds the secret")
	}
	if n := len(f.upstream.requests()); n != 0 {
		t.Errorf("upstream was called %d times; a failed token must stop the request", n)
	}
	if len(f.records(t)) != 0 {
		t.Error("a failed token request wrote a record to redis")
	}
	logs := replica.logs()
	if !strings.Contains(logs, "7000215") {
		t.Error("the logs do not carry the AADSTS code of the failure")
	}
	assertNoSecrets(t, logs)
}
