package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// plantBackoff writes a transient backoff of the record key, running for
// a minute, with message: what anyone who can write to Redis can do.
func (f *fleet) plantBackoff(t *testing.T, key, message string) {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"until": time.Now().Add(time.Minute).UTC(), "permanent": false,
		"attempts": 1, "message": message})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.rdb.Set(context.Background(), strings.TrimSuffix(key, ":token")+":backoff", raw, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
}

// onlyRecordKey returns the key of the one record in Redis.
func (f *fleet) onlyRecordKey(t *testing.T) string {
	t.Helper()
	records := f.records(t)
	if len(records) != 1 {
		t.Fatalf("redis holds %d records, want 1", len(records))
	}
	for key := range records {
		return key
	}
	return ""
}

// longestRun is the length of the longest run of c in s.
func longestRun(s string, c byte) int {
	longest, run := 0, 0
	for i := range len(s) {
		if s[i] != c {
			run = 0
			continue
		}
		run++
		longest = max(longest, run)
	}
	return longest
}

// TestPlantedOversizedValuesAreRefused: a backoff with a 1 MiB message
// planted in Redis is not read (the replica fetches its token), so no
// answer of entra_token, the IMDS endpoint or the admin API carries it;
// one within the size bound has its message served cut to the 1 KiB a
// replica writes.
func TestPlantedOversizedValuesAreRefused(t *testing.T) {
	f := newFleet(t)
	env := append(f.env(testClientSecret), "TEST_IDENTITY_HEADER="+testIdentityHeader, "TEST_EXTRA_BIND=")
	s := startSidecar(t, endpointCaddyfile, env...)
	tokenVia(t, s, f.upstream, "/orders/a")
	key := f.onlyRecordKey(t)
	imds := s.URL + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://orders"
	metadata := http.Header{"Metadata": {"true"}}
	// deleteRecord drops the token everywhere through the admin API, so
	// that the next request looks at the store's backoff.
	deleteRecord := func() {
		t.Helper()
		req, _ := http.NewRequest(http.MethodDelete, s.AdminURL+"/entra/tokens/orders-api", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE /entra/tokens/orders-api: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	answers := func() map[string]response {
		return map[string]response{
			"entra_token": send(t, s.URL+"/orders/b", nil),
			"imds":        send(t, imds, metadata),
			"admin API":   send(t, s.AdminURL+"/entra/tokens/orders-api", nil),
		}
	}

	const huge = 1 << 20 // far over the bound; 4 MiB can time out reading under -race
	f.plantBackoff(t, key, strings.Repeat("m", huge))
	deleteRecord()
	requests := f.emulator.TokenRequests()
	for name, r := range answers() {
		if len(r.Body) > 64<<10 || longestRun(r.Body, 'm') > 1024 {
			t.Errorf("%s: %d-byte answer (status %d) carrying %d bytes of the planted message", name, len(r.Body), r.Status, longestRun(r.Body, 'm'))
		}
	}
	if n := f.emulator.TokenRequests() - requests; n != 1 {
		t.Errorf("%d token requests, want 1: the oversized backoff is ignored", n)
	}
	if !strings.Contains(s.logs(), "ignoring a shared backoff larger than any replica writes") {
		t.Error("the oversized backoff was not logged")
	}

	// Within the bound, with a message longer than a replica writes: obeyed,
	// its message cut as written.
	f.plantBackoff(t, key, strings.Repeat("m", 6000))
	deleteRecord()
	requests = f.emulator.TokenRequests()
	for name, r := range answers() {
		if longestRun(r.Body, 'm') != 1024 {
			t.Errorf("%s: status %d, the planted message served as %d bytes, want it cut to 1024", name, r.Status, longestRun(r.Body, 'm'))
		}
	}
	if n := f.emulator.TokenRequests() - requests; n != 0 {
		t.Errorf("%d token requests while a backoff within the bound runs, want 0", n)
	}
}
