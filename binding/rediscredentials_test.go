package binding

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
)

const redisOID = "11111111-1111-1111-1111-111111111111"

// redisToken is an unsigned JWT for Redis valid for an hour, naming oid
// (none when empty) and serial (to tell tokens apart).
// redisTokenExp is every test token's exp, fixed once: a token built again
// to compare is the same across a second's boundary.
var redisTokenExp = time.Now().Add(time.Hour).Unix()

func redisToken(oid string, serial int64) string {
	b64 := base64.RawURLEncoding.EncodeToString
	payload := fmt.Sprintf(`{"serial":%d,"exp":%d`, serial, redisTokenExp)
	if oid != "" {
		payload += fmt.Sprintf(`,"oid":%q`, oid)
	}
	return b64([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + b64([]byte(payload+"}")) + ".c2ln"
}

func writeRedisToken(w http.ResponseWriter, token string) {
	writeRedisTokenFor(w, token, time.Hour)
}

func writeRedisTokenFor(w http.ResponseWriter, token string, lifetime time.Duration) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"expires_in":%d,"token_type":"Bearer"}`, token, int(lifetime.Seconds()))
}

func writeTokenFailure(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprint(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}`)
}

// redisTokenClient returns a client of a token endpoint that answers the
// nth request (from 1) with answer, and the count of requests.
func redisTokenClient(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int64)) (*entra.Client, *atomic.Int64) {
	t.Helper()
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm() // read: else r.Context() misses the client's end
		answer(w, r, requests.Add(1))
	}))
	t.Cleanup(srv.Close)
	tenant := "72f988bf-86f1-41af-91ab-2d7cd011db47"
	client, err := entra.NewClient(entra.Config{TenantID: tenant, ClientID: "00000000-0000-4000-8000-0000000000c1", ClientSecret: "s",
		TokenEndpoint: srv.URL + "/" + tenant + "/oauth2/v2.0/token"})
	if err != nil {
		t.Fatal(err)
	}
	return client, &requests
}

// blockedAnswer returns an answer that signals arrived, then waits for
// release before writing the nth token.
func blockedAnswer(arrived, release chan struct{}) func(http.ResponseWriter, *http.Request, int64) {
	return func(w http.ResponseWriter, r *http.Request, n int64) {
		arrived <- struct{}{}
		select {
		case <-release:
			writeRedisToken(w, redisToken(redisOID, n))
		case <-r.Context().Done():
		}
	}
}

// moveClock stops now at the present, to move only by what the returned
// function adds (a clock that also ran would move a backoff's end under a
// loaded machine); the test's end restores it.
func moveClock(t *testing.T) func(time.Duration) {
	var offset atomic.Int64
	start := time.Now()
	now = func() time.Time { return start.Add(time.Duration(offset.Load())) }
	t.Cleanup(func() { now = time.Now })
	return func(d time.Duration) { offset.Add(int64(d)) }
}

// renewalInFlight returns the channel closed when r's request in flight
// ends, nil when none.
func renewalInFlight(r *RedisCredentials) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}

// A token request slower than the Redis call that needed it is not bound
// to that call: the call fails on its own deadline, the request goes on,
// and the next connection gets its token at once.
func TestRedisTokenRequestOutlivesTheCallersDeadline(t *testing.T) {
	arrived, release := make(chan struct{}, 10), make(chan struct{})
	client, requests := redisTokenClient(t, blockedAnswer(arrived, release))
	creds := NewRedisCredentials(client, 20*time.Minute, zap.NewNop())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, password, err := creds.Credentials(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || password != "" {
		t.Fatalf("Credentials under an expired deadline = %q, %v; want no password and context.DeadlineExceeded", password, err)
	}
	if !strings.Contains(err.Error(), "redis entra: waiting for a token for "+RedisScope) {
		t.Errorf("error %q does not name what it waited for", err)
	}
	renewal := renewalInFlight(creds)
	if renewal == nil {
		t.Fatal("the token request ended with its caller's deadline")
	}
	<-arrived
	close(release)
	<-renewal

	expired, cancel := context.WithCancel(context.Background())
	cancel() // a token at once needs no time
	user, password, err := creds.Credentials(expired)
	if err != nil || user != redisOID || password != redisToken(redisOID, 1) {
		t.Fatalf("Credentials after the request = %q, %v; want the token and its oid", user, err)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("token requests = %d, want 1", n)
	}
}

// In the renewal window, concurrent new connections get the valid token at
// once, and one renewal runs for all of them.
func TestRedisTokenIsRenewedOnceInTheBackground(t *testing.T) {
	arrived, release := make(chan struct{}, 30), make(chan struct{})
	blocked := blockedAnswer(arrived, release)
	client, requests := redisTokenClient(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if n == 1 {
			writeRedisTokenFor(w, redisToken(redisOID, n), 15*time.Minute) // under minLeft
			return
		}
		blocked(w, r, n)
	})
	move := moveClock(t)
	creds := NewRedisCredentials(client, 20*time.Minute, zap.NewNop())
	if _, _, err := creds.Credentials(context.Background()); err != nil {
		t.Fatal(err)
	}
	move(8 * time.Minute) // past half its lifetime: renewed then, as it lives less than minLeft

	expired, cancel := context.WithCancel(context.Background())
	cancel() // the old token needs no wait
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, password, err := creds.Credentials(expired); err != nil || password != redisToken(redisOID, 1) {
				t.Errorf("Credentials in the renewal window: %v; want the old token at once", err)
			}
		})
	}
	wg.Wait()
	renewal := renewalInFlight(creds)
	if renewal == nil {
		t.Fatal("no renewal in flight")
	}
	<-arrived
	if n := requests.Load(); n != 2 {
		t.Errorf("token requests = %d, want 2 (1 in the renewal window)", n)
	}
	close(release)
	<-renewal
	if _, password, err := creds.Credentials(expired); err != nil || password != redisToken(redisOID, 2) {
		t.Errorf("Credentials after the renewal: %v; want the new token", err)
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("token requests = %d, want 2", n)
	}
}

// A failed token request is not repeated within its backoff (1 s, then
// 2 s): meanwhile callers get the last error without a request.
func TestRedisTokenFailureBacksOff(t *testing.T) {
	move := moveClock(t)
	client, requests := redisTokenClient(t, func(w http.ResponseWriter, _ *http.Request, _ int64) { writeTokenFailure(w) })
	core, logs := observer.New(zap.InfoLevel)
	creds := NewRedisCredentials(client, 20*time.Minute, zap.New(core))
	expect := func(wantRequests int64) {
		t.Helper()
		_, password, err := creds.Credentials(context.Background())
		if err == nil || password != "" || !strings.Contains(err.Error(), "redis entra: requesting a token for "+RedisScope) {
			t.Fatalf("Credentials = %v; want the request's failure", err)
		}
		if n := requests.Load(); n != wantRequests {
			t.Fatalf("token requests = %d, want %d", n, wantRequests)
		}
	}
	expect(1)
	expect(1)
	move(time.Second - time.Millisecond)
	expect(1)
	move(time.Millisecond)
	expect(2)
	move(time.Second)
	expect(2)
	move(time.Second)
	expect(3)
	// One warning per failed request, for the operator: not one per connection.
	if warnings := logs.FilterMessageSnippet("requesting the token Redis authenticates with failed").AllUntimed(); len(warnings) != 3 ||
		warnings[2].ContextMap()["retry_in"] != 4*time.Second {
		t.Errorf("logged %+v; want 3 warnings, the last retried in 4s", warnings)
	}
}

// While renewals fail, new connections keep the valid token, and a renewal
// is asked only after its backoff.
func TestRedisTokenIsKeptWhileRenewalsFail(t *testing.T) {
	move := moveClock(t)
	client, requests := redisTokenClient(t, func(w http.ResponseWriter, _ *http.Request, n int64) {
		if n == 1 {
			writeRedisToken(w, redisToken(redisOID, n))
			return
		}
		writeTokenFailure(w)
	})
	creds := NewRedisCredentials(client, 20*time.Minute, zap.NewNop())
	if _, _, err := creds.Credentials(context.Background()); err != nil {
		t.Fatal(err)
	}
	move(45 * time.Minute)
	old := redisToken(redisOID, 1)
	expect := func(wantRequests int64) {
		t.Helper()
		if _, password, err := creds.Credentials(context.Background()); err != nil || password != old {
			t.Fatalf("Credentials = %v; want the valid token", err)
		}
		if renewal := renewalInFlight(creds); renewal != nil {
			<-renewal
		}
		if n := requests.Load(); n != wantRequests {
			t.Fatalf("token requests = %d, want %d", n, wantRequests)
		}
	}
	expect(2)
	expect(2)
	move(time.Second)
	expect(3)
	expect(3)
	move(time.Hour) // expired; the backoff (2 s) is over
	if _, password, err := creds.Credentials(context.Background()); err == nil || password != "" {
		t.Fatalf("Credentials with an expired token and a failing endpoint: %v; want the failure", err)
	}
	if n := requests.Load(); n != 4 {
		t.Errorf("token requests = %d, want 4", n)
	}
}

// A token without oid names no Redis user: refused.
func TestRedisTokenWithoutObjectIDIsRefused(t *testing.T) {
	client, _ := redisTokenClient(t, func(w http.ResponseWriter, _ *http.Request, n int64) {
		writeRedisToken(w, redisToken("", n))
	})
	_, password, err := NewRedisCredentials(client, 20*time.Minute, zap.NewNop()).Credentials(context.Background())
	want := "redis entra: the token names no object ID (oid), which is the Redis user name"
	if err == nil || err.Error() != want || password != "" {
		t.Fatalf("Credentials = %v; want %q", err, want)
	}
}

// With an Entra slower than the store's OpTimeout, the first Redis call
// fails, and once that token request has completed every call succeeds
// without another.
func TestRedisStoreWithEntraSlowerThanOpTimeout(t *testing.T) {
	token := redisToken(redisOID, 1)
	client, requests := redisTokenClient(t, func(w http.ResponseWriter, r *http.Request, _ int64) {
		select {
		case <-time.After(300 * time.Millisecond): // Entra's latency
			writeRedisToken(w, token)
		case <-r.Context().Done():
		}
	})
	mr := miniredis.RunT(t)
	mr.RequireUserAuth(redisOID, token)
	creds := NewRedisCredentials(client, 20*time.Minute, zap.NewNop())
	store, err := redisstore.New(redisstore.Options{URL: "redis://" + mr.Addr(), Credentials: creds.Credentials,
		OpTimeout: 100 * time.Millisecond, MaxConnectionAge: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.Ping(context.Background()); err == nil {
		t.Fatal("a ping within 100 ms succeeded with a token that takes 300 ms")
	}
	if _, _, err := creds.Credentials(context.Background()); err != nil { // the renewal's end
		t.Fatal(err)
	}
	for i := range 20 {
		if err := store.Ping(context.Background()); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("token requests = %d, want 1", n)
	}
}

// A token that has expired by the time it arrives (a slow answer, a short
// expires_in) is a failure with its backoff: never empty credentials with
// no error, which go-redis would take as a connection without AUTH.
func TestRedisTokenExpiredOnArrivalIsAFailure(t *testing.T) {
	move := moveClock(t)
	client, requests := redisTokenClient(t, func(w http.ResponseWriter, _ *http.Request, n int64) {
		move(2 * time.Hour) // the hour-long token is past its expiry when it arrives
		writeRedisToken(w, redisToken(redisOID, n))
	})
	creds := NewRedisCredentials(client, 20*time.Minute, zap.NewNop())
	user, password, err := creds.Credentials(context.Background())
	if err == nil || user != "" || password != "" || !strings.Contains(err.Error(), "had expired when it arrived") {
		t.Fatalf("Credentials = %q, password set %v, %v; want the expired token refused", user, password != "", err)
	}
	if _, _, err := creds.Credentials(context.Background()); err == nil || requests.Load() != 1 {
		t.Errorf("within the backoff: %v, %d requests; want the failure, 1 request", err, requests.Load())
	}
}

// A throttled request waits as long as Retry-After says (up to a minute),
// not the first backoff's second.
func TestRedisTokenThrottledWaitsForRetryAfter(t *testing.T) {
	move := moveClock(t)
	client, requests := redisTokenClient(t, func(w http.ResponseWriter, _ *http.Request, _ int64) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	creds := NewRedisCredentials(client, 20*time.Minute, zap.NewNop())
	if _, _, err := creds.Credentials(context.Background()); err == nil {
		t.Fatal("a throttled request gave credentials")
	}
	move(29 * time.Second)
	if _, _, err := creds.Credentials(context.Background()); err == nil || requests.Load() != 1 {
		t.Fatalf("within Retry-After: %v, %d requests; want the failure, 1 request", err, requests.Load())
	}
	move(time.Second)
	_, _, _ = creds.Credentials(context.Background())
	if n := requests.Load(); n != 2 {
		t.Errorf("after Retry-After: %d requests, want 2", n)
	}
}

// TestRedisTokenShorterLivedThanMinLeftIsNotRequestedPerConnection:
// max_connection_age 45m asks for renewal with 90m left, more than a
// 75-minute token ever has: new connections still share one token,
// renewed at half its lifetime, and the operator is told.
func TestRedisTokenShorterLivedThanMinLeftIsNotRequestedPerConnection(t *testing.T) {
	client, requests := redisTokenClient(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		writeRedisTokenFor(w, redisToken(redisOID, n), 75*time.Minute)
	})
	core, logs := observer.New(zap.WarnLevel)
	creds := NewRedisCredentials(client, 2*45*time.Minute, zap.New(core))
	for range 20 { // 20 new connections, as after a failover
		if _, _, err := creds.Credentials(t.Context()); err != nil {
			t.Fatal(err)
		}
		if renewal := renewalInFlight(creds); renewal != nil {
			<-renewal
		}
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d token requests for 20 connections with a valid 75-minute token, want 1", n)
	}
	if n := logs.FilterMessageSnippet("lower max_connection_age").Len(); n != 1 {
		t.Errorf("%d warnings that max_connection_age is too long for the token, want 1", n)
	}
}

// TestRedisTokenWithoutRoomForItsRenewalIsWarnedOf: a 21-minute token with
// max_connection_age 10m is renewed with 10.5 minutes left; a connection
// made while the renewal runs gets it and may outlive it: the operator is
// told, though the token lives longer than twice max_connection_age.
func TestRedisTokenWithoutRoomForItsRenewalIsWarnedOf(t *testing.T) {
	client, _ := redisTokenClient(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		writeRedisTokenFor(w, redisToken(redisOID, n), 21*time.Minute)
	})
	core, logs := observer.New(zap.WarnLevel)
	creds := NewRedisCredentials(client, 2*10*time.Minute, zap.New(core))
	if _, _, err := creds.Credentials(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := logs.FilterMessageSnippet("lower max_connection_age").Len(); n != 1 {
		t.Errorf("%d warnings that max_connection_age leaves no room for the renewal, want 1", n)
	}
}
