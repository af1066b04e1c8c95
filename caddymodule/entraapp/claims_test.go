package entraapp

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// A claims challenge whose token request the endpoint refuses, while the
// application's token is valid, fails RefreshForClaims only: the token is
// still served, no backoff is shown or obeyed (readiness reads
// LastFailure), and the admin API's purge fetches at once.
func TestRefusedClaimsChallengeKeepsTheTokenServed(t *testing.T) {
	app, emulator, _ := newTestAppWith(t, unitClientSecret, func(a *App) { a.ClientCapabilities = []string{"cp1"} })
	app.startOperations()
	t.Cleanup(app.stopOperations)
	first, err := app.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	emulator.FailNext(1, entratest.Failure{Status: http.StatusBadRequest, Error: "invalid_request", Description: "The claims are not valid."})
	if _, err := app.RefreshForClaims(t.Context(), "graph-api", `{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}`); err == nil || emulator.TokenRequests() != 2 {
		t.Fatalf("RefreshForClaims: %v after %d token requests, want the endpoint's refusal", err, emulator.TokenRequests())
	}
	if f := app.LastFailure("graph-api"); f != nil {
		t.Errorf("a refused claims challenge is the application's failure: %s (active %v)", f.Message, f.Active)
	}
	if got, err := app.Token(t.Context(), "graph-api"); err != nil || got.AccessToken != first.AccessToken {
		t.Errorf("Token after the refusal: %v, or not the current token", err)
	}
	var info tokenInfo
	if rec := admin(t, http.MethodGet, "/entra/tokens/graph-api"); rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &info) != nil {
		t.Fatalf("admin status: %d %s", rec.Code, rec.Body)
	}
	if info.Backoff != nil || info.Fingerprint == "" {
		t.Errorf("admin status: backoff %+v, fingerprint %q; want none, and the current token", info.Backoff, info.Fingerprint)
	}
	if rec := admin(t, http.MethodDelete, "/entra/tokens/graph-api"); rec.Code != http.StatusOK {
		t.Fatalf("admin purge: %d %s", rec.Code, rec.Body)
	}
	if got, err := app.Token(t.Context(), "graph-api"); err != nil || got.AccessToken == first.AccessToken || emulator.TokenRequests() != 3 {
		t.Errorf("Token after the purge: %v after %d token requests, want a fresh token", err, emulator.TokenRequests())
	}
}
