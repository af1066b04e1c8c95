package binding_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/binding"
	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// The default presentations of a credential (a secret in the form body, a
// certificate signing an assertion, a federated token, a managed identity)
// keep the record key and the credential ID they had before client_auth
// joined the credential's identity: upgrading a fleet with default configs
// re-keys no record and lifts or splits no shared backoff. The values are
// pinned from the release before that change. A federated token's ID now
// also holds a digest of the token in the file (entra's FailureFingerprint:
// a refusal of one pod's token pauses only that token): pinned here while
// the file is unreadable. The client ID is a GUID, as Entra's token
// endpoint now requires (the pins are bd648d5's for it).
func TestDefaultPresentationsKeepTheirRecordKeyAndCredentialID(t *testing.T) {
	const endpoint = "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token"
	const pinnedClientID = "0e5e3f9c-2222-4a2b-9c3d-0000000000c1"
	certificate := &entra.CertificateCredential{CertFile: "testdata/pinned.crt", KeyFile: "testdata/pinned.key"}
	sealingKey := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		name                         string
		cfg                          entra.Config
		recordKey, plainID, sealedID string
	}{
		{name: "client secret, client_auth unset",
			cfg:       entra.Config{TokenEndpoint: endpoint, ClientID: pinnedClientID, ClientSecret: "s3cret+value"},
			recordKey: "entra:{fc78ee03c82575ed4f07e4550fd0d9bc}:token", plainID: "29e22c944d979e67bc60250b", sealedID: "a87928fae1a9e410da266148"},
		{name: "client secret, client_auth post",
			cfg:       entra.Config{TokenEndpoint: endpoint, ClientID: pinnedClientID, ClientSecret: "s3cret+value", ClientAuth: entra.ClientAuthPost},
			recordKey: "entra:{fc78ee03c82575ed4f07e4550fd0d9bc}:token", plainID: "29e22c944d979e67bc60250b", sealedID: "a87928fae1a9e410da266148"},
		{name: "certificate signing an assertion",
			cfg:       entra.Config{TokenEndpoint: endpoint, ClientID: pinnedClientID, ClientCertificate: certificate},
			recordKey: "entra:{fc78ee03c82575ed4f07e4550fd0d9bc}:token", plainID: "75dae11cbc5a1b181b483fe6", sealedID: "50a3bf722e4733169b4815ef"},
		{name: "federated token file, unreadable",
			cfg:       entra.Config{TokenEndpoint: endpoint, ClientID: pinnedClientID, FederatedTokenFile: "/var/run/secrets/azure/tokens/azure-identity-token"},
			recordKey: "entra:{fc78ee03c82575ed4f07e4550fd0d9bc}:token", plainID: "be1a37dbfc2cb0da936bb083", sealedID: "87baa2f334df4c06b98508af"},
		{name: "user-assigned managed identity",
			cfg:       entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{ClientID: "66666666-7777-8888-9999-000000000000"}},
			recordKey: "entra:{cdf2921d62fceb1c59beee674b3b22ff}:token", plainID: "3ecbab69cc8111673d49a6df", sealedID: "303b26f719b70e947c2a13a9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, err := entra.NewClient(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			scopes := []string{"api://orders/.default"}
			plain := binding.Application("orders", client, scopes, nil, nil, zap.NewNop())
			sealed := binding.Application("orders", client, scopes, sealingKey, nil, zap.NewNop())
			if got := tokencache.RecordKey(tokencache.DefaultKeyPrefix, plain); got != tc.recordKey {
				t.Errorf("record key %q, was %q", got, tc.recordKey)
			}
			if got := plain.CredentialIDFunc(); got != tc.plainID {
				t.Errorf("credential ID (records in plaintext) %q, was %q", got, tc.plainID)
			}
			if got := sealed.CredentialIDFunc(); got != tc.sealedID {
				t.Errorf("credential ID (sealed records) %q, was %q", got, tc.sealedID)
			}
		})
	}
}

// A server that requires client_secret_basic refuses the default post with
// 401 invalid_client, a permanent failure that pauses the credential. A
// reload that fixes client_auth (basic, the same secret) presents the
// credential otherwise: its first request is sent, not held back by the
// pause of the post config, which still holds for post.
func TestReloadThatFixesClientAuthIsNotPausedByTheOldMethodsBackoff(t *testing.T) {
	var requests, basic atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if _, _, ok := r.BasicAuth(); !ok {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": "invalid_client", "error_description": "client_secret_basic required"})
			return
		}
		basic.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "opaque-token", "token_type": "Bearer", "expires_in": 3600})
	}))
	defer srv.Close()
	cache, err := tokencache.New(tokencache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	register := func(clientAuth string) *tokencache.Handle {
		client, err := entra.NewClient(entra.Config{TokenEndpoint: srv.URL + "/token", ClientID: "orders-sidecar",
			ClientSecret: "s3cret+value", ClientAuth: clientAuth})
		if err != nil {
			t.Fatal(err)
		}
		h, err := cache.Register(binding.Application("orders", client, []string{"orders:read"}, nil, nil, zap.NewNop()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Release)
		return h
	}
	if _, err := register(entra.ClientAuthPost).Token(context.Background()); err == nil {
		t.Fatal("the server took client_secret_post: nothing to test")
	}
	if _, err := register(entra.ClientAuthPost).Token(context.Background()); err == nil || requests.Load() != 1 {
		t.Fatalf("another post config: %d requests, error %v; want 1 request, then paused by the refusal", requests.Load(), err)
	}
	if _, err := register(entra.ClientAuthBasic).Token(context.Background()); err != nil || basic.Load() != 1 {
		t.Errorf("the config fixed with client_auth basic: %d basic requests, error %v; want its own request, not the post config's pause", basic.Load(), err)
	}
}

// expiredTokenEndpoint is a token endpoint (at /tenant/oauth2/v2.0/token)
// that refuses the federated token "expired.projected.token" with
// AADSTS700024, after calling onRefusal if not nil, and answers any other
// with a token; it counts both.
func expiredTokenEndpoint(t *testing.T, onRefusal func()) (endpoint string, refused, sent *atomic.Int32) {
	refused, sent = new(atomic.Int32), new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		if r.PostForm.Get("client_assertion") == "expired.projected.token" {
			refused.Add(1)
			if onRefusal != nil {
				onRefusal()
			}
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": "invalid_client", "error_codes": []int{700024},
				"error_description": "AADSTS700024: Client assertion is not within its valid time range."})
			return
		}
		if r.URL.Path == "/tenant/oauth2/v2.0/token" { // not tenant discovery
			sent.Add(1)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "opaque-token", "token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/tenant/oauth2/v2.0/token", refused, sent
}

// federatedReplica is a replica on store whose application "orders"
// authenticates with the federated token in tokenFile at endpoint.
func federatedReplica(t *testing.T, store tokencache.Store, endpoint, tokenFile string) *tokencache.Handle {
	cache, err := tokencache.New(tokencache.Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	client, err := entra.NewClient(entra.Config{TokenEndpoint: endpoint, ClientID: "orders-sidecar", FederatedTokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	h, err := cache.Register(binding.Application("orders", client, []string{"api://orders/.default"}, nil, nil, zap.NewNop()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Release)
	return h
}

// writeToken writes token to path, as the kubelet projects one.
func writeToken(t *testing.T, path, token string) {
	if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
		t.Error(err)
	}
}

// Each replica's federated token file holds a token of its own (a pod's
// projected token). Entra's refusal of one replica's expired token
// (AADSTS700024, a permanent failure shared through the store) pauses that
// token only: another replica's token, or the same replica's once the
// kubelet writes a new one, is sent at once; the expired token stays paused.
func TestOneReplicasExpiredFederatedTokenPausesOnlyThatToken(t *testing.T) {
	endpoint, expired, sent := expiredTokenEndpoint(t, nil)
	store := tokencache.NewMemoryStore() // the fleet's Redis
	// One file stands for each pod's (the replicas run in one process):
	// every pod mounts its token at the same path, so the record key and
	// the credential's path are the fleet's.
	tokenFile := filepath.Join(t.TempDir(), "azure-identity-token")
	sick, healthy := federatedReplica(t, store, endpoint, tokenFile), federatedReplica(t, store, endpoint, tokenFile)
	writeToken(t, tokenFile, "expired.projected.token")
	for range 2 {
		if _, err := sick.Token(t.Context()); err == nil {
			t.Fatal("the expired token was taken")
		}
	}
	if got := expired.Load(); got != 1 {
		t.Errorf("the expired token was sent %d times, want 1: then paused", got)
	}
	writeToken(t, tokenFile, "fresh.projected.token")
	if _, err := healthy.Token(t.Context()); err != nil || sent.Load() != 1 {
		t.Errorf("a replica with a valid token sent %d requests and got %v: paused by another token's refusal", sent.Load(), err)
	}
}

// The kubelet writes a fresh token while Entra is refusing the expired one
// (AADSTS700024): the refusal binds the token sent, not the one in the file
// when the answer came, so the fresh token is sent at once.
func TestATokenWrittenDuringItsPredecessorsRefusalIsNotPaused(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "azure-identity-token")
	// The kubelet, while the request is in flight:
	endpoint, _, fresh := expiredTokenEndpoint(t, func() { writeToken(t, tokenFile, "fresh.projected.token") })
	h := federatedReplica(t, tokencache.NewMemoryStore(), endpoint, tokenFile)
	writeToken(t, tokenFile, "expired.projected.token")
	if _, err := h.Token(t.Context()); err == nil {
		t.Fatal("the expired token was taken")
	}
	if _, err := h.Token(t.Context()); err != nil || fresh.Load() != 1 {
		t.Errorf("the fresh token, written while the expired one was refused: %d requests, error %v; paused by the expired token's refusal", fresh.Load(), err)
	}
}
