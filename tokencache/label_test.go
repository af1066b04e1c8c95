package tokencache

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
)

// TestLabelIsShownNameIsTheKey: with Label set, records (returned and
// stored), error messages and log fields show the Label, while Token,
// Unregister and Applications use the unique Name: two generations of one
// configured application ("graph-api#7", "graph-api#8") coexist and show
// as "graph-api".
func TestLabelIsShownNameIsTheKey(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	gen7 := testApp("graph-api#7", f.Fetch)
	gen7.Label = "graph-api"
	failing := Application{Name: "orders-api#7", Label: "orders-api", Identity: testIdentity,
		Scopes: []string{"api://orders/.default"},
		Fetch:  func(context.Context) (Fetched, error) { return Fetched{}, errors.New("connection refused") }}
	c, _, logs := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, gen7, failing)

	rec, err := c.Token(t.Context(), "graph-api#7")
	if err != nil || rec.ApplicationName != "graph-api" {
		t.Fatalf("Token(graph-api#7) = %v, %v; want ApplicationName graph-api", rec, err)
	}
	raw, err := mr.Get(RecordKey(DefaultKeyPrefix, gen7))
	if err != nil {
		t.Fatal(err)
	}
	var stored ClientCredential
	if err := json.Unmarshal([]byte(raw), &stored); err != nil || stored.ApplicationName != "graph-api" {
		t.Errorf("stored record applicationName %q (%v), want graph-api", stored.ApplicationName, err)
	}
	if hit, _ := c.Token(t.Context(), "graph-api#7"); hit.ApplicationName != "graph-api" {
		t.Errorf("L1 hit ApplicationName %q, want graph-api", hit.ApplicationName)
	}
	var coded *Error
	if _, err := c.Token(t.Context(), "graph-api"); !errors.As(err, &coded) || coded.Code != CodeApplicationNotFound {
		t.Errorf("Token(label) = %v, want %s: the Name is the key", err, CodeApplicationNotFound)
	}

	// Errors name the label, the first failure's and the backed-off one's.
	for range 2 {
		_, err := c.Token(t.Context(), "orders-api#7")
		if err == nil || !strings.Contains(err.Error(), `"orders-api"`) || strings.Contains(err.Error(), "#7") {
			t.Errorf("failing Token() = %v, want a message naming \"orders-api\" and not the internal name", err)
		}
	}

	// The next generation shares the key: it takes the L1 token, and the
	// old one's cleanup leaves it alone.
	gen8 := testApp("graph-api#8", f.Fetch)
	gen8.Label = "graph-api"
	if err := c.Register(gen8); err != nil {
		t.Fatal(err)
	}
	c.Unregister("graph-api#7")
	if got := c.Applications(); !slices.Equal(got, []string{"graph-api#8", "orders-api#7"}) {
		t.Errorf("Applications() = %v", got)
	}
	rec, err = c.Token(t.Context(), "graph-api#8")
	if err != nil || rec.ApplicationName != "graph-api" || rec.AccessToken != "token-1" || f.calls.Load() != 1 {
		t.Errorf("Token(graph-api#8) = %v, %v after %d fetches; want the kept token-1 as graph-api", rec, err, f.calls.Load())
	}

	// Log fields name the label only.
	fetched := 0
	for _, entry := range logs.All() {
		app, ok := entry.ContextMap()["application"].(string)
		if !ok {
			continue
		}
		if strings.Contains(app, "#") {
			t.Errorf("log %q has application %q, want the label", entry.Message, app)
		}
		if entry.Message == "fetched access token" && app == "graph-api" {
			fetched++
		}
	}
	if fetched != 1 {
		t.Errorf("%d \"fetched access token\" logs for graph-api, want 1", fetched)
	}

	// Without a Label, the Name is shown.
	plain := testApp("graph-plain", f.Fetch)
	if err := c.Register(plain); err != nil {
		t.Fatal(err)
	}
	if rec, _ := c.Token(t.Context(), "graph-plain"); rec.ApplicationName != "graph-plain" {
		t.Errorf("ApplicationName %q without a Label, want the Name", rec.ApplicationName)
	}

	// Registration errors name the label too.
	bad := Application{Name: "x#1", Label: "x", Scopes: []string{testScope}, Fetch: f.Fetch}
	if err := c.Register(bad); err == nil || !strings.Contains(err.Error(), `"x"`) || strings.Contains(err.Error(), "#1") {
		t.Errorf("Register(no identity) = %v, want an error naming \"x\"", err)
	}
}
