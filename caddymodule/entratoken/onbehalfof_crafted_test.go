package entratoken

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

// Tokens anyone can write: the handler checks claims, not signatures
// (Entra does, when it exchanges), so these reach the token endpoint.

// craftedToken is an unsigned JWT with claims: no key, no sign-in.
func craftedToken(t *testing.T, claims map[string]any) string {
	t.Helper()
	header, err := json.Marshal(map[string]any{"alg": "RS256", "typ": "JWT", "kid": "none-of-entra"})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc(header) + "." + enc(payload) + "." + enc([]byte("not-a-signature"))
}

// An allowed tenant where the application is not provisioned answers every
// exchange with the application's failure (AADSTS700016): one crafted
// token naming it pauses that tenant's exchanges only, and the users of
// the home tenant neither wait nor see that tenant's failure.
func TestCraftedTokenOfAnotherAllowedTenantPausesOnlyThatTenant(t *testing.T) {
	const unprovisioned = "cccccccc-0000-4000-8000-cccccccccccc"
	app, emulator, _ := apptest.NewOnBehalfOfApp(t, func(a *entraapp.Application) {
		a.OnBehalfOf.AllowedTenants = append(a.OnBehalfOf.AllowedTenants, unprovisioned)
	})
	crafted := "Bearer " + craftedToken(t, map[string]any{"tid": unprovisioned, "aud": "api://" + apptest.ClientID,
		"exp": time.Now().Add(time.Hour).Unix(), "oid": "crafted"})
	rec, _ := serveOBO(t, app, crafted, nil)
	if rec.Code == http.StatusNoContent {
		t.Fatalf("a crafted token for a tenant the application is not in was exchanged")
	}
	exchanges := emulator.OnBehalfOfRequests()
	if rec, _ := serveOBO(t, app, crafted, nil); rec.Code != http.StatusServiceUnavailable && rec.Code != http.StatusBadGateway ||
		emulator.OnBehalfOfRequests() != exchanges {
		t.Errorf("the unprovisioned tenant again: %d after %d more exchanges; want it paused, without an exchange",
			rec.Code, emulator.OnBehalfOfRequests()-exchanges)
	}
	rec, _ = serveOBO(t, app, "Bearer "+apptest.UserToken(t, emulator, userB, "", 0), nil)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("a user of the home tenant after the crafted token: %d Retry-After %q %s; want 204",
			rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	rec, _ = serveOBO(t, app, "Bearer "+apptest.UserToken(t, emulator, userA, apptest.AllowedTenant, 0), nil)
	if rec.Code != http.StatusNoContent || strings.Contains(rec.Body.String(), unprovisioned) {
		t.Errorf("a user of another allowed tenant after the crafted token: %d %s; want 204", rec.Code, rec.Body)
	}
}

// Distinct user tokens beyond the exchanges an application runs at once
// (its cap, 32 with the default token_request_concurrency) are answered
// at once 503 with a Retry-After, without an exchange: a flood of tokens
// anyone can write costs a bounded amount of work.
func TestExchangesBeyondTheCapAreAnswered503(t *testing.T) {
	app, emulator, _ := apptest.NewOnBehalfOfApp(t, nil)
	emulator.SetResponseDelay(300 * time.Millisecond) // each exchange holds its flight
	const users = 64
	tokens := make([]string, users)
	for i := range tokens {
		tokens[i] = "Bearer " + apptest.UserToken(t, emulator, fmt.Sprintf("0c0c0c0c-0000-4000-8000-%012d", i), "", 0)
	}
	type answer struct {
		code       int
		retryAfter string
		body       string
	}
	done := make(chan answer, users)
	for _, token := range tokens {
		go func() {
			rec, _ := serveOBO(t, app, token, nil)
			done <- answer{rec.Code, rec.Header().Get("Retry-After"), rec.Body.String()}
		}()
	}
	codes := map[int]int{}
	for range users {
		a := <-done
		codes[a.code]++
		switch a.code {
		case http.StatusNoContent:
		case http.StatusServiceUnavailable:
			if a.retryAfter != "1" || !strings.Contains(a.body, entraapp.CodeTokenRequestFailed) {
				t.Errorf("503 with Retry-After %q, %s; want Retry-After 1 and %s", a.retryAfter, a.body, entraapp.CodeTokenRequestFailed)
			}
		default:
			t.Errorf("answered %d %s", a.code, a.body)
		}
	}
	t.Logf("%d users at once: answered %v, %d exchanges", users, codes, emulator.OnBehalfOfRequests())
	if codes[http.StatusServiceUnavailable] == 0 {
		t.Errorf("no request refused beyond the cap: %v", codes)
	}
	if n := emulator.OnBehalfOfRequests(); n != int64(codes[http.StatusNoContent]) {
		t.Errorf("%d exchanges for %d users served; want one each, none for the refused", n, codes[http.StatusNoContent])
	}
}
