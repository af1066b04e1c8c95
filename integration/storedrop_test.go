package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDeletingAndAnnouncingRecordsDoesNotDriveTokenRequests: a Redis
// writer without the encryption key who holds the key's refresh lock (as
// a replica does: one with no expiry is taken over), deletes the record
// and announces it every 100 ms makes neither of two replicas drop its
// valid token (no purge mark names it): every
// request carries the same token, no token request is made, and the
// refused drops are counted. A 401 afterwards still purges the token, and
// the other replica takes the fresh one.
func TestDeletingAndAnnouncingRecordsDoesNotDriveTokenRequests(t *testing.T) {
	f := newFleet(t)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	env := append(f.env(testClientSecret), "TEST_REDIS_KEY="+base64.StdEncoding.EncodeToString(key))
	config := fleetConfig("encryption_key {env.TEST_REDIS_KEY}", "")
	replicas := []*sidecar{startSidecar(t, config, env...), startSidecar(t, config, env...)}
	token := tokenVia(t, replicas[0], f.upstream, "/orders/a")
	if tokenVia(t, replicas[1], f.upstream, "/orders/a") != token {
		t.Fatal("the replicas do not share one token")
	}
	ctx := context.Background()
	keys, err := f.rdb.Keys(ctx, testKeyPrefix+"*:token").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("record keys %v, %v; want one", keys, err)
	}
	recordKey := keys[0]
	base := strings.TrimSuffix(recordKey, ":token")
	requests := f.emulator.TokenRequests()
	if err := f.rdb.Set(ctx, base+":lock", "held-by-the-writer", 15*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	const rounds = 15
	for range rounds {
		if err := f.rdb.Del(ctx, recordKey).Err(); err != nil {
			t.Fatal(err)
		}
		if err := f.rdb.Publish(ctx, base+":updated", "another-replica").Err(); err != nil {
			t.Fatal(err)
		}
		<-ticker.C
		for i, r := range replicas {
			if got := tokenVia(t, r, f.upstream, "/orders/b"); got != token {
				t.Fatalf("replica %d injected another token", i)
			}
		}
	}
	if n := f.emulator.TokenRequests() - requests; n != 0 {
		t.Errorf("%d token requests during %d deletions and announcements, want 0", n, rounds)
	}
	for i, r := range replicas {
		text := scrapeMetrics(t, r)
		dropped := metricValue(t, text, `caddy_entra_store_drops_total{application="orders-api",result="dropped"}`)
		kept := metricValue(t, text, `caddy_entra_store_drops_total{application="orders-api",result="kept"}`)
		if dropped != 0 || kept < rounds-5 {
			t.Errorf("replica %d: store drops dropped=%v kept=%v, want none dropped and about %d kept", i, dropped, kept, rounds)
		}
	}

	// The writer lets go of the lock; the upstream refuses the token.
	if err := f.rdb.Del(ctx, base+":lock").Err(); err != nil {
		t.Fatal(err)
	}
	f.upstream.refuse(token)
	if status, _ := get(t, replicas[0].URL+"/orders/c", nil); status != http.StatusUnauthorized {
		t.Fatalf("status %d, want the upstream's 401 passed through", status)
	}
	fresh := tokenVia(t, replicas[0], f.upstream, "/orders/d")
	for start := time.Now(); !strings.Contains(replicas[1].logs(), "took a newer access token announced by another replica"); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 2*time.Second {
			t.Fatal("replica 1 did not take the fresh token within 2 s of the purge on replica 0")
		}
	}
	if fresh == token || tokenVia(t, replicas[1], f.upstream, "/orders/e") != fresh || f.emulator.TokenRequests()-requests != 1 {
		t.Errorf("after the 401: %d token requests, want 1 fresh token that both replicas inject", f.emulator.TokenRequests()-requests)
	}
}

// metricValue returns the value of the sample named series in text, 0 if
// there is none.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, line := range metricLines(text, series+" ") {
		v, err := strconv.ParseFloat(strings.TrimPrefix(line, series+" "), 64)
		if err != nil {
			t.Fatalf("metric %s: %v", line, err)
		}
		return v
	}
	return 0
}
