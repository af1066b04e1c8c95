package entraapp

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// admin sends one request to the admin API's handler.
func admin(t *testing.T, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := (adminAPI{}).serveTokens(rec, httptest.NewRequest(method, "http://localhost"+path, nil)); err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestAdminAPI(t *testing.T) {
	app, emulator, _ := newTestApp(t, unitClientSecret)
	app.startOperations()
	t.Cleanup(app.stopOperations)
	first, err := app.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	var bodies []string
	check := func(rec *httptest.ResponseRecorder, status int) string {
		t.Helper()
		if rec.Code != status {
			t.Fatalf("status %d, want %d: %s", rec.Code, status, rec.Body.String())
		}
		bodies = append(bodies, rec.Body.String())
		return rec.Body.String()
	}

	var list []tokenInfo
	if err := json.Unmarshal([]byte(check(admin(t, http.MethodGet, "/entra/tokens"), http.StatusOK)), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ApplicationName != "graph-api" || list[1].ApplicationName != "orders-api" {
		t.Fatalf("list %+v, want graph-api and orders-api", list)
	}
	graph := list[0]
	if graph.Fingerprint == "" || graph.Claims == nil || graph.Claims.Audience != "https://graph.microsoft.com" ||
		graph.Source != "fetched" || graph.RecordKey == "" || graph.NextRefreshAt == nil || graph.CreatedAt == nil ||
		graph.Identity.ClientID != unitClientID || graph.Identity.Credential != "client_secret" || graph.Backoff != nil {
		t.Errorf("graph-api entry %+v", graph)
	}
	if list[1].Fingerprint != "" || list[1].AccessTokenExpiresAt != nil {
		t.Errorf("orders-api has no token yet: %+v", list[1])
	}

	var refreshed tokenInfo
	if err := json.Unmarshal([]byte(check(admin(t, http.MethodPost, "/entra/tokens/graph-api/refresh"), http.StatusOK)), &refreshed); err != nil {
		t.Fatal(err)
	}
	if refreshed.Fingerprint == graph.Fingerprint || emulator.TokenRequests() != 2 {
		t.Errorf("refresh: fingerprint %s (was %s) after %d token requests, want a new token", refreshed.Fingerprint, graph.Fingerprint, emulator.TokenRequests())
	}
	check(admin(t, http.MethodPost, "/entra/tokens/graph-api/refresh"), http.StatusOK)
	if n := emulator.TokenRequests(); n != 2 {
		t.Errorf("two refreshes within a second made %d token requests, want 1", n-1)
	}
	second, _ := app.Token(t.Context(), "graph-api")

	var purged tokenInfo
	if err := json.Unmarshal([]byte(check(admin(t, http.MethodDelete, "/entra/tokens/graph-api"), http.StatusOK)), &purged); err != nil {
		t.Fatal(err)
	}
	if purged.Fingerprint != "" || purged.AccessTokenExpiresAt != nil {
		t.Errorf("after purge: %+v, want no token", purged)
	}
	third, err := app.Token(t.Context(), "graph-api")
	if err != nil || third.AccessToken == second.AccessToken || emulator.TokenRequests() != 3 {
		t.Errorf("after purge: %v, %d token requests; want a fresh token", err, emulator.TokenRequests())
	}

	body := check(admin(t, http.MethodGet, "/entra/tokens/nope"), http.StatusNotFound)
	if !strings.Contains(body, CodeApplicationNotFound) {
		t.Errorf("unknown application: %s", body)
	}
	check(admin(t, http.MethodGet, "/entra/tokens/graph-api/refresh"), http.StatusMethodNotAllowed)
	check(admin(t, http.MethodPut, "/entra/tokens"), http.StatusMethodNotAllowed)
	check(admin(t, http.MethodGet, "/entra/tokens/graph-api/other"), http.StatusNotFound)

	// A refresh inside the backoff makes no token request.
	emulator.FailNext(1, entratest.Failure{Status: http.StatusTooManyRequests, RetryAfter: "30"})
	time.Sleep(time.Second) // out of the coalescing second
	check(admin(t, http.MethodPost, "/entra/tokens/graph-api/refresh"), http.StatusServiceUnavailable)
	rec := admin(t, http.MethodPost, "/entra/tokens/graph-api/refresh")
	check(rec, http.StatusServiceUnavailable) // the same failure, shared within the second
	time.Sleep(time.Second)
	rec = admin(t, http.MethodPost, "/entra/tokens/graph-api/refresh")
	check(rec, http.StatusTooManyRequests)
	if ra, _ := strconv.Atoi(rec.Header().Get("Retry-After")); ra < 25 || ra > 30 {
		t.Errorf("Retry-After %q, want the backoff's (about 28s)", rec.Header().Get("Retry-After"))
	}
	if n := emulator.TokenRequests(); n != 4 {
		t.Errorf("%d token requests, want 4: none while backed off", n)
	}
	var backedOff tokenInfo
	_ = json.Unmarshal([]byte(check(admin(t, http.MethodGet, "/entra/tokens/graph-api"), http.StatusOK)), &backedOff)
	if b := backedOff.Backoff; b == nil || !b.Active || b.Kind != "transient" || b.Error == "" || b.TraceID == "" {
		t.Errorf("backoff %+v, want an active transient backoff with the endpoint's error", b)
	}
	if backedOff.Fingerprint == "" {
		t.Error("the current token is kept (and shown) while backed off")
	}

	all := strings.Join(bodies, "\n")
	for _, secret := range []string{unitClientSecret, first.AccessToken, second.AccessToken, third.AccessToken} {
		if strings.Contains(all, secret) {
			t.Error("an admin response holds a token or the secret")
		}
		if i := strings.LastIndex(secret, "."); i > 0 && strings.Contains(all, secret[i+1:]) {
			t.Error("an admin response holds a token's signature")
		}
	}
}

func TestAdminAPIWithoutARunningApp(t *testing.T) {
	if runningApp.Load() != nil {
		t.Skip("an app is running")
	}
	rec := admin(t, http.MethodGet, "/entra/tokens")
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), CodeProviderNotConfigured) {
		t.Errorf("%d %s", rec.Code, rec.Body.String())
	}
}

// An on-behalf-of application has no token of its own: the admin API says
// so, and refuses to refresh or purge one (a client-credentials request
// for its delegated scope would fail and start a backoff).
func TestAdminAPIOnBehalfOfApplication(t *testing.T) {
	app, emulator, _ := newTestAppWith(t, unitClientSecret, func(a *App) {
		a.Applications["graph-as-user"] = &Application{Scopes: []string{"https://graph.microsoft.com/User.Read"}, OnBehalfOf: &OnBehalfOfConfig{}}
	})
	app.startOperations()
	t.Cleanup(app.stopOperations)
	for _, req := range [][2]string{{http.MethodPost, "/entra/tokens/graph-as-user/refresh"}, {http.MethodDelete, "/entra/tokens/graph-as-user"}} {
		rec := admin(t, req[0], req[1])
		if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "ON_BEHALF_OF_APPLICATION") {
			t.Errorf("%s %s: %d %s, want 409 ON_BEHALF_OF_APPLICATION", req[0], req[1], rec.Code, rec.Body)
		}
	}
	if n := emulator.IssuedTokens(); n != 0 {
		t.Errorf("%d token requests, want none", n)
	}
	if rec := admin(t, http.MethodGet, "/entra/tokens/graph-as-user/refresh"); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET .../refresh: %d, want 405 as for any application", rec.Code)
	}
	var info tokenInfo
	if err := json.Unmarshal(admin(t, http.MethodGet, "/entra/tokens/graph-as-user").Body.Bytes(), &info); err != nil || !info.OnBehalfOf {
		t.Errorf("GET: %+v, %v; want onBehalfOf true", info, err)
	}
	var own tokenInfo
	if err := json.Unmarshal(admin(t, http.MethodGet, "/entra/tokens/graph-api").Body.Bytes(), &own); err != nil || own.OnBehalfOf {
		t.Errorf("GET graph-api: %+v, %v; want no onBehalfOf", own, err)
	}
}

// A token's expiry is shown to the millisecond, as records hold it, by the
// CLI (a fresh token's expiry has nanoseconds) as by the admin API.
func TestTokenInfoShowsExpiryInMilliseconds(t *testing.T) {
	var info tokenInfo
	info.withToken("opaque", time.Date(2026, 12, 7, 8, 0, 0, 123456789, time.FixedZone("x", 3600)))
	if got, _ := json.Marshal(info.AccessTokenExpiresAt); string(got) != `"2026-12-07T07:00:00.123Z"` {
		t.Errorf("accessTokenExpiresAt = %s, want \"2026-12-07T07:00:00.123Z\"", got)
	}
}

// An on-behalf-of application's entry names it, its scopes and identity,
// and says it exchanges users' tokens: it has no record, so no recordKey.
func TestAdminAPIOnBehalfOfEntry(t *testing.T) {
	app, _, _ := newTestAppWith(t, unitClientSecret, func(a *App) {
		a.Applications["graph-as-user"] = &Application{OnBehalfOf: &OnBehalfOfConfig{},
			Scopes: []string{"https://graph.microsoft.com/User.Read", "https://graph.microsoft.com/Mail.Read"}}
	})
	app.startOperations()
	t.Cleanup(app.stopOperations)
	var entry map[string]any
	if err := json.Unmarshal(admin(t, http.MethodGet, "/entra/tokens/graph-as-user").Body.Bytes(), &entry); err != nil {
		t.Fatal(err)
	}
	identity, _ := entry["identity"].(map[string]any)
	if len(entry) != 4 || entry["applicationName"] != "graph-as-user" || entry["onBehalfOf"] != true ||
		entry["scope"] != "https://graph.microsoft.com/User.Read https://graph.microsoft.com/Mail.Read" ||
		identity["client_id"] != unitClientID || identity["credential"] != "client_secret" {
		t.Errorf("entry %v, want applicationName, scope, identity and onBehalfOf only", entry)
	}
}

// An application whose name holds "/" is named with %2F in the path.
func TestAdminAPINameWithASlash(t *testing.T) {
	app, _, _ := newTestAppWith(t, unitClientSecret, func(a *App) {
		a.Applications["orders/v2"] = &Application{Scopes: []string{"api://orders/.default"}}
	})
	app.startOperations()
	t.Cleanup(app.stopOperations)
	for _, req := range [][2]string{
		{http.MethodPost, "/entra/tokens/orders%2Fv2/refresh"},
		{http.MethodGet, "/entra/tokens/orders%2fv2"},
		{http.MethodDelete, "/entra/tokens/orders%2Fv2"},
	} {
		if rec := admin(t, req[0], req[1]); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"applicationName": "orders/v2"`) {
			t.Errorf("%s %s: %d %s", req[0], req[1], rec.Code, rec.Body)
		}
	}
	for _, path := range []string{"/entra/tokens/orders/v2", "/entra/tokens/orders%252Fv2"} {
		if rec := admin(t, http.MethodGet, path); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d %s, want 404", path, rec.Code, rec.Body)
		}
	}
}
