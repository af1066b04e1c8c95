package binding_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/binding"
	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
)

// A downstream's claims challenge whose claims the token endpoint refuses
// (400 invalid_request) fails only the token request made for it
// (TryRefresh, as entra_token makes it): two replicas sharing sealed
// records in Redis, neither backs the application off, so a purge's
// refetch on one and a forced refresh on the other still get tokens, and
// Redis holds no backoff. (Found by review 19: the refusal paused the
// application's token requests fleet-wide.)
func TestRefusedClaimsChallengePausesNoTokenRequests(t *testing.T) {
	var plain, withClaims atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.PostForm.Get("claims"), "bogus") {
			withClaims.Add(1)
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": "invalid_request", "error_description": "the claims are not valid"})
			return
		}
		n := plain.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("opaque-token-%d", n), "token_type": "Bearer", "expires_in": 3600})
	}))
	defer srv.Close()
	mr := miniredis.RunT(t)
	key := make([]byte, 32)
	replica := func() *tokencache.Handle {
		store, err := redisstore.New(redisstore.Options{URL: "redis://" + mr.Addr(), EncryptionKeys: [][]byte{key}})
		if err != nil {
			t.Fatal(err)
		}
		cache, err := tokencache.New(tokencache.Options{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cache.Close() })
		client, err := entra.NewClient(entra.Config{TokenEndpoint: srv.URL + "/token", ClientID: "orders-sidecar",
			ClientSecret: "secret", ClientCapabilities: []string{"cp1"}})
		if err != nil {
			t.Fatal(err)
		}
		h, err := cache.Register(binding.Application("orders", client, []string{"orders:read"}, key, nil, zap.NewNop()))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	a, b := replica(), replica()
	ctx := t.Context()
	first, err := a.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Token(ctx); err != nil || got.AccessToken != first.AccessToken {
		t.Fatalf("replica B: %v, or another token than A's", err)
	}

	// Route X's upstream answers a claims challenge that the endpoint refuses.
	_, err = a.TryRefresh(entra.WithClaimsChallenge(ctx, `{"access_token":{"bogus":{"essential":true}}}`))
	var refused *entra.RequestError
	if !errors.As(err, &refused) || refused.StatusCode != http.StatusBadRequest || errors.Is(err, tokencache.ErrPaused) || withClaims.Load() != 1 {
		t.Fatalf("claims refresh: %v after %d token requests with the claims, want the endpoint's 400", err, withClaims.Load())
	}
	if got, err := a.Token(ctx); err != nil || got.AccessToken != first.AccessToken {
		t.Errorf("replica A after the refusal: %v, or not the current token", err)
	}
	// Route Y's upstream refuses the current token (purge_on_status 401).
	if !a.PurgeRejected(ctx, first.AccessToken) {
		t.Fatal("PurgeRejected did not purge the current token")
	}
	if got, err := a.Token(ctx); err != nil || got.AccessToken == first.AccessToken {
		t.Errorf("replica A after the purge: %v; a refused claims challenge paused the application's token requests", err)
	}
	// Replica B: the admin API's refresh.
	if _, err := b.Refresh(ctx); err != nil {
		t.Errorf("replica B, a forced refresh: %v; a refused claims challenge paused it", err)
	}
	for _, k := range mr.Keys() {
		if strings.HasSuffix(k, ":backoff") {
			t.Errorf("Redis holds a backoff (%s) after a refused claims challenge", k)
		}
	}
	for _, h := range []*tokencache.Handle{a, b} {
		if f := h.Status().Failure; f != nil {
			t.Errorf("a replica records a failure: %s", f.Message)
		}
	}
	if n := plain.Load(); n != 3 {
		t.Errorf("%d token requests without claims, want 3 (first, the purge's refetch, B's refresh)", n)
	}
}

// TestMalformedClaimsChallengePausesNothing: a downstream's challenge whose
// claims are not a JSON object is refused before any request, as the
// endpoint's refusal is: its caller's alone, no backoff, and the
// application's own Token still makes its request.
func TestMalformedClaimsChallengePausesNothing(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "opaque-token", "token_type": "Bearer", "expires_in": 3600})
	}))
	defer srv.Close()
	cache, err := tokencache.New(tokencache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	client, err := entra.NewClient(entra.Config{TokenEndpoint: srv.URL + "/token", ClientID: "orders-sidecar",
		ClientSecret: "s3cret+value", ClientCapabilities: []string{"cp1"}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := cache.Register(binding.Application("orders", client, []string{"orders:read"}, nil, nil, zap.NewNop()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if _, err := h.TryRefresh(entra.WithClaimsChallenge(context.Background(), `{"access_token":`)); !errors.Is(err, entra.ErrClaimsChallenge) {
		t.Fatalf("TryRefresh with malformed claims: %v, want ErrClaimsChallenge", err)
	}
	if _, err := h.Token(context.Background()); err != nil || requests.Load() != 1 {
		t.Errorf("Token after a malformed claims challenge: %d requests, error %v; want its own request", requests.Load(), err)
	}
}
