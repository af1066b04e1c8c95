package entratoken

import (
	"encoding/base64"
	"encoding/json"
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
