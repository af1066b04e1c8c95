package entraready

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

// probe runs one request through an entra_ready for names.
func probe(t *testing.T, app *entraapp.App, names ...string) (*httptest.ResponseRecorder, readyBody) {
	t.Helper()
	r := &Ready{Applications: names, app: app}
	if err := r.resolveNames(); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "http://sidecar/readyz", nil)
	req.RemoteAddr = "127.0.0.1:40000" // details are for loopback peers
	if err := r.ServeHTTP(rec, req, nil); err != nil {
		t.Fatal(err)
	}
	var body readyBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	return rec, body
}

func TestReadyConcurrentProbesCostOneTokenRequest(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	emulator.SetResponseDelay(100 * time.Millisecond) // all probes arrive during the one request
	var wg sync.WaitGroup
	statuses := make([]int, 100)
	for i := range statuses {
		wg.Go(func() {
			rec, _ := probe(t, app, "graph-api")
			statuses[i] = rec.Code
		})
	}
	wg.Wait()
	for i, status := range statuses {
		if status != http.StatusOK {
			t.Fatalf("probe %d: status %d, want 200", i, status)
		}
	}
	if got := emulator.TokenRequests(); got != 1 {
		t.Errorf("100 concurrent probes made %d token requests, want 1", got)
	}
	rec, body := probe(t, app) // default: every application
	if rec.Code != http.StatusOK || !body.Ready || len(body.Applications) != 2 ||
		body.Applications["orders-api"].AccessTokenExpiresAt == nil {
		t.Errorf("probe of all: %d %s", rec.Code, rec.Body.String())
	}
}

func TestReadyAnswers503WithTheCodeThenRecovers(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	counted := func(result string) float64 { return testutil.ToFloat64(probes.WithLabelValues(result)) }
	notReady, ready := counted("not_ready"), counted("ready")
	emulator.FailNext(1, entratest.Failure{Status: http.StatusServiceUnavailable, Error: "temporarily_unavailable",
		Description: "The service is temporarily unavailable.", ErrorCodes: []int{90033}})
	rec, body := probe(t, app, "graph-api")
	got := body.Applications["graph-api"]
	if rec.Code != http.StatusServiceUnavailable || body.Ready || got == nil || got.Ready ||
		got.Code != entraapp.CodeTokenRequestFailed || got.Error != "temporarily_unavailable" ||
		len(got.ErrorCodes) != 1 || got.ErrorCodes[0] != 90033 || got.TraceID == "" {
		t.Fatalf("while failing: %d %s", rec.Code, rec.Body.String())
	}
	retryAfter, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if err != nil || retryAfter < 1 || retryAfter > 2 {
		t.Errorf("Retry-After %q, want the transient backoff (1-2s)", rec.Header().Get("Retry-After"))
	}
	// Probes inside the backoff make no token request.
	for range 10 {
		if rec, _ := probe(t, app, "graph-api"); rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("probe in backoff: %d", rec.Code)
		}
	}
	if n := emulator.TokenRequests(); n != 1 {
		t.Errorf("%d token requests during the backoff, want 1", n)
	}
	time.Sleep(time.Duration(retryAfter) * time.Second)
	if rec, body := probe(t, app, "graph-api"); rec.Code != http.StatusOK || !body.Ready {
		t.Errorf("after recovery: %d %s", rec.Code, rec.Body.String())
	}
	if n, r := counted("not_ready")-notReady, counted("ready")-ready; n != 11 || r != 1 {
		t.Errorf("probes counted %v not_ready and %v ready, want 11 and 1", n, r)
	}
}
