package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// entraRedis is a real redis-server that accepts Entra tokens as Azure
// Cache for Redis does: the ACL user is the identity's object ID, its
// passwords the unexpired tokens the emulator issued for
// https://redis.azure.com (each added before the client has it, removed
// once it expires: Azure takes any unexpired token of the identity, so
// replicas renewing at different times each keep working), and a
// connection is closed once it is older than the least time a token
// handed to a new connection has left (its token may then have expired).
type entraRedis struct {
	addr    string
	admin   *redis.Client
	mu      sync.Mutex
	tokens  []string    // redis tokens issued, in order
	expires []time.Time // tokens[i]'s expiry
	removed int         // tokens removed from the ACL once expired: tokens[:removed]
	user    string
	killed  atomic.Int64
	// killedSubscriptions counts the closed connections that held a
	// subscription: each is a window in which announcements are lost.
	killedSubscriptions atomic.Int64
}

func startEntraRedis(t *testing.T, emulator *entratest.Emulator, killAge time.Duration) *entraRedis {
	t.Helper()
	r := startRedis(t)
	ctx := context.Background()
	setup := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer setup.Close()
	for _, cmd := range [][]any{
		{"ACL", "SETUSER", "admin", "on", ">admin-password", "~*", "&*", "+@all"},
		{"ACL", "SETUSER", "default", "off"}, // every connection must authenticate
	} {
		if err := setup.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	er := &entraRedis{addr: r.Addr, admin: redis.NewClient(&redis.Options{Addr: r.Addr, Username: "admin", Password: "admin-password"})}
	t.Cleanup(func() { er.admin.Close() })
	emulator.OnIssue(func(issued entratest.Issued) {
		if issued.Resource != "https://redis.azure.com" {
			return
		}
		er.mu.Lock()
		defer er.mu.Unlock()
		cmd := []any{"ACL", "SETUSER", issued.ObjectID, "on", ">" + issued.AccessToken, "~*", "&*", "+@all"}
		if err := er.admin.Do(ctx, cmd...).Err(); err != nil {
			t.Errorf("ACL SETUSER: %v", err)
		}
		er.tokens, er.expires, er.user = append(er.tokens, issued.AccessToken), append(er.expires, issued.ExpiresAt), issued.ObjectID
	})
	stop := make(chan struct{})
	var done sync.WaitGroup
	done.Go(func() { er.closeOld(stop, killAge) })
	t.Cleanup(func() { close(stop); done.Wait() })
	return er
}

// closeOld closes the identity's connections older than age, twice a
// second, until stop is closed.
func (er *entraRedis) closeOld(stop <-chan struct{}, age time.Duration) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		er.removeExpired()
		er.mu.Lock()
		user := er.user
		er.mu.Unlock()
		list, err := er.admin.ClientList(context.Background()).Result()
		if err != nil || user == "" {
			continue
		}
		for line := range strings.Lines(list) {
			fields := map[string]string{}
			for field := range strings.FieldsSeq(line) {
				k, v, _ := strings.Cut(field, "=")
				fields[k] = v
			}
			seconds, _ := strconv.Atoi(fields["age"])
			if fields["user"] == user && time.Duration(seconds)*time.Second >= age {
				if er.admin.Do(context.Background(), "CLIENT", "KILL", "ID", fields["id"]).Err() == nil {
					er.killed.Add(1)
					if fields["psub"] != "0" || fields["sub"] != "0" {
						er.killedSubscriptions.Add(1)
					}
				}
			}
		}
	}
}

// removeExpired removes the expired tokens from the ACL user's passwords.
func (er *entraRedis) removeExpired() {
	er.mu.Lock()
	defer er.mu.Unlock()
	for er.removed < len(er.tokens) && time.Now().After(er.expires[er.removed]) {
		if er.admin.Do(context.Background(), "ACL", "SETUSER", er.user, "<"+er.tokens[er.removed]).Err() != nil {
			return
		}
		er.removed++
	}
}

// authFailures counts the failed authentications Redis logged.
func (er *entraRedis) authFailures(t *testing.T) int {
	t.Helper()
	entries, err := er.admin.Do(context.Background(), "ACL", "LOG").Slice()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, entry := range entries {
		if strings.Contains(fmt.Sprint(entry), "auth") {
			n++
		}
	}
	return n
}

// TestRedisWithEntraAuthenticationSurvivesRotations: two replicas share
// tokens through a Redis that takes Entra tokens as passwords (10 s tokens,
// max_connection_age 3s). Under steady traffic through both replicas, the
// Redis password rotates at least twice, an expired password is removed
// and connections older than 6 s are closed, as an expired token's would
// be: no request fails, Redis logs no failed authentication, no
// subscription lives long enough to be closed, and each forced refresh on
// replica A reaches replica B through an announcement within a second.
func TestRedisWithEntraAuthenticationSurvivesRotations(t *testing.T) {
	emulator, server, err := entratest.NewServer(entratest.Options{TokenLifetime: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	emulator.AddClient(testClientID, testClientSecret)
	const maxAge = 3 * time.Second
	er := startEntraRedis(t, emulator, 2*maxAge)

	var mu sync.Mutex
	seen := map[string]string{} // replica -> the last token it injected
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Unlock()
	}))
	t.Cleanup(up.Close)
	config := sidecarConfig(testIdentity+`
		refresh_window 5s
		redis redis://`+er.addr+` {
			key_prefix `+testKeyPrefix+`
			encryption_key {env.TEST_REDIS_KEY}
			entra {
				max_connection_age 3s
			}
		}
		application orders-api api://orders/.default`,
		route{Path: "/orders", Application: "orders-api"})
	env := []string{"TEST_AUTHORITY_HOST=" + server.URL, "TEST_TENANT_ID=" + emulator.TenantID(),
		"TEST_CLIENT_ID=" + testClientID, "TEST_CLIENT_SECRET=" + testClientSecret,
		"TEST_REDIS_KEY=" + base64.StdEncoding.EncodeToString(make([]byte, 32)), "TEST_UPSTREAM=" + up.URL}
	a, b := startSidecar(t, config, env...), startSidecar(t, config, env...)

	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var traffic sync.WaitGroup
	for name, replica := range map[string]*sidecar{"a": a, "b": b} {
		traffic.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				sent.Add(1)
				resp, err := http.Get(replica.URL + "/orders/" + name)
				if err != nil {
					failed.Add(1)
					continue
				}
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Logf("replica %s answered %d", name, resp.StatusCode)
				}
				resp.Body.Close()
			}
		})
	}
	token := func(replica string) string {
		mu.Lock()
		defer mu.Unlock()
		return seen["/"+replica]
	}
	waitFor(t, "both replicas injecting", 15*time.Second, func() error {
		if token("a") == "" || token("b") == "" {
			return fmt.Errorf("not yet")
		}
		return nil
	})

	deadline := time.Now().Add(45 * time.Second)
	refreshes := 0
	for time.Now().Before(deadline) {
		er.mu.Lock()
		rotations := len(er.tokens) - 1
		er.mu.Unlock()
		if rotations >= 2 && refreshes >= 3 {
			break
		}
		time.Sleep(4 * time.Second) // between forced refreshes: wall-clock rotations are the subject
		before := token("a")
		resp, err := http.Post(a.AdminURL+"/entra/tokens/orders-api/refresh", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("forced refresh on A: %d", resp.StatusCode)
		}
		refreshes++
		var newToken string // what A's own traffic injects once it has the refreshed token
		waitFor(t, "replica A injecting its refreshed token", 5*time.Second, func() error {
			if newToken = token("a"); newToken == before {
				return fmt.Errorf("A still injects the token from before the refresh")
			}
			return nil
		})
		waitFor(t, "replica B injecting A's refreshed token", time.Second, func() error {
			if token("b") != newToken {
				return fmt.Errorf("B still injects another token")
			}
			return nil
		})
	}
	close(stop)
	traffic.Wait()

	er.mu.Lock()
	rotations := len(er.tokens) - 1
	er.mu.Unlock()
	t.Logf("%d requests, %d failed; %d Redis password rotations, %d old connections closed by Redis, %d forced refreshes announced",
		sent.Load(), failed.Load(), rotations, er.killed.Load(), refreshes)
	if rotations < 2 {
		t.Errorf("%d rotations of the Redis password, want at least 2", rotations)
	}
	er.removeExpired()
	er.mu.Lock()
	removed := er.removed
	er.mu.Unlock()
	if removed == 0 {
		t.Errorf("no expired Redis password was removed: the test did not outlive a token")
	}
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed", failed.Load(), sent.Load())
	}
	if n := er.killedSubscriptions.Load(); n != 0 {
		t.Errorf("%d subscriptions outlived the least time left of their token (announcements lost meanwhile): not renewed before expiry", n)
	}
	if n := er.authFailures(t); n != 0 {
		t.Errorf("Redis logged %d failed authentications", n)
	}
	for _, s := range []*sidecar{a, b} {
		if strings.Contains(s.logs(), "token store unavailable") {
			t.Errorf("a replica gave up on Redis:\n%s", s.logs())
		}
		assertNoSecrets(t, s.logs(), er.tokens...)
	}
}
