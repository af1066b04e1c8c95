package integration

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDeletingAndAnnouncingRecordsDoesNotDriveTokenRequests: a Redis
// writer deleting the record and announcing it every 100 ms for 3 s makes
// each of two replicas drop its still-valid token once (at most once per
// 10 s), so at most two token requests, and the drops are counted.
func TestDeletingAndAnnouncingRecordsDoesNotDriveTokenRequests(t *testing.T) {
	f := newFleet(t)
	replicas := []*sidecar{
		startSidecar(t, fleetConfig("", ""), f.env(testClientSecret)...),
		startSidecar(t, fleetConfig("", ""), f.env(testClientSecret)...),
	}
	for _, r := range replicas {
		tokenVia(t, r, f.upstream, "/orders/a")
	}
	key := f.onlyRecordKey(t)
	channel := strings.TrimSuffix(key, ":token") + ":updated"
	requests := f.emulator.TokenRequests()
	ctx := context.Background()
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	// 3 s and at least 15 rounds (the kept count checked below needs 11 on
	// a machine too loaded for them in 3 s), within 8 s: inside the 10 s
	// that allow one drop.
	start := time.Now()
	for round := 0; time.Since(start) < 3*time.Second || round < 15 && time.Since(start) < 8*time.Second; round++ {
		if err := f.rdb.Del(ctx, key).Err(); err != nil {
			t.Fatal(err)
		}
		if err := f.rdb.Publish(ctx, channel, "another-replica").Err(); err != nil {
			t.Fatal(err)
		}
		for _, r := range replicas {
			if got := send(t, r.URL+"/orders/b", nil); got.Status != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", got.Status, got.Body)
			}
		}
		<-ticker.C
	}
	n := f.emulator.TokenRequests() - requests
	t.Logf("%d token requests in %v of deletions and announcements", n, time.Since(start).Round(time.Millisecond))
	if n > int64(len(replicas)) {
		t.Errorf("%d token requests, want at most %d: one drop per replica per 10 s", n, len(replicas))
	}
	for i, r := range replicas {
		text := scrapeMetrics(t, r)
		dropped := metricValue(t, text, `caddy_entra_store_drops_total{application="orders-api",result="dropped"}`)
		kept := metricValue(t, text, `caddy_entra_store_drops_total{application="orders-api",result="kept"}`)
		if dropped != 1 || kept < 10 {
			t.Errorf("replica %d: store drops dropped=%v kept=%v, want 1 dropped and the rest (about 29) kept", i, dropped, kept)
		}
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
