package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestWarmUpIsBoundedAndARequestPassesIt: a replica with 24 prefetched
// applications and token_request_concurrency 4, against a token endpoint
// that takes 300 ms an answer, makes at most 2 token requests at once for
// its warm-up (background refreshes hold at most half of the slots); a
// request for an application that is not prefetched is answered during
// the warm-up, not queued behind it.
func TestWarmUpIsBoundedAndARequestPassesIt(t *testing.T) {
	f := newFleet(t)
	const warm = 24
	const delay = 300 * time.Millisecond
	f.emulator.SetResponseDelay(delay)
	var apps strings.Builder
	for i := range warm {
		fmt.Fprintf(&apps, "application app-%d api://app-%d/.default\n", i, i)
	}
	config := sidecarConfig(testIdentity+`
		token_request_concurrency 4
		prefetch
		redis {env.TEST_REDIS_URL} {
			key_prefix `+testKeyPrefix+`
			insecure_plaintext
		}
		`+apps.String()+`
		application cold-api {
			scope api://cold/.default
			prefetch off
		}`,
		route{Path: "/cold", Application: "cold-api"})
	replica := startSidecar(t, config, f.env(testClientSecret)...)

	waitFor(t, "the warm-up's first token requests", 10*time.Second, func() error {
		if f.emulator.TokenRequests() == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	start := time.Now()
	status, body := get(t, replica.URL+"/cold/a", nil)
	took, during := time.Since(start), f.emulator.TokenRequests()
	if status != http.StatusOK {
		t.Fatalf("request during the warm-up: %d %s", status, body)
	}
	waitFor(t, "every prefetched token", 30*time.Second, func() error {
		if n := len(f.records(t)); n != warm+1 {
			return fmt.Errorf("%d records", n)
		}
		return nil
	})
	t.Logf("warm-up of %d at %v an answer: at most %d token requests at once; a request during it took %v (after %d token requests)",
		warm, delay, f.emulator.MostConcurrentTokenRequests(), took.Round(time.Millisecond), during)
	if most := f.emulator.MostConcurrentTokenRequests(); most > 3 { // 2 of the warm-up + the request's
		t.Errorf("%d token requests at once, want at most 2 for the warm-up and 1 for the request", most)
	}
	if during >= warm {
		t.Errorf("the request was answered after %d token requests: queued behind the warm-up of %d", during, warm)
	}
	if took > 4*delay {
		t.Errorf("the request took %v, want about one token request (%v)", took, delay)
	}
}
