package entratoken

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

const homeDomain = "contoso.onmicrosoft.com"

// An on-behalf-of application whose tenant_id is a domain name: nothing is
// resolved at load; the tenant's ID is resolved once for many concurrent
// requests, and users' tokens are then checked as with a GUID tenant_id.
func TestOnBehalfOfDomainTenantIsResolvedOnceBeforeTheFirstCheck(t *testing.T) {
	app, emulator, _ := apptest.NewOnBehalfOfApp(t, func(a *entraapp.Application) { a.TenantID = homeDomain })
	if n := emulator.DiscoveryRequests(); n != 0 {
		t.Fatalf("%d discovery requests at load, want 0", n)
	}
	if err := emulator.AddDomain(homeDomain, emulator.TenantID()); err != nil {
		t.Fatal(err)
	}
	home := apptest.UserToken(t, emulator, userA, "", 0)
	var wg sync.WaitGroup
	codes := make(chan int, 32)
	for range 32 {
		wg.Go(func() {
			rec, seen := serveOBO(t, app, "Bearer "+home, nil)
			if rec.Code == http.StatusNoContent && verifiedDownstream(t, emulator, seen).ObjectID != userA {
				codes <- 0
				return
			}
			codes <- rec.Code
		})
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusNoContent {
			t.Fatalf("a home tenant's user: answered %d, want 204 with the user's downstream token", code)
		}
	}
	if n := emulator.DiscoveryRequests(); n != 1 {
		t.Errorf("%d discovery requests for 32 concurrent requests, want 1", n)
	}
	if n := emulator.OnBehalfOfRequests(); n != 1 {
		t.Errorf("%d exchanges for one user token, want 1", n)
	}

	rec, _ := serveOBO(t, app, "Bearer "+apptest.UserToken(t, emulator, userB, apptest.AllowedTenant, 0), nil)
	if rec.Code != http.StatusNoContent {
		t.Errorf("an allowed tenant's user: answered %d: %s", rec.Code, rec.Body)
	}
	rec, seen := serveOBO(t, app, "Bearer "+apptest.UserToken(t, emulator, userB, apptest.ForeignTenant, 0), nil)
	var body entraapp.ErrorBody
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if rec.Code != http.StatusUnauthorized || body.Code != entraapp.CodeUserTokenInvalid || seen != nil ||
		!strings.Contains(body.Message, "tid: is not the application's tenant or an allowed tenant") {
		t.Errorf("a foreign tenant's user: answered %d %s (%s), downstream called %t; want 401 %s naming tid",
			rec.Code, body.Code, body.Message, seen != nil, entraapp.CodeUserTokenInvalid)
	}
	if n := emulator.OnBehalfOfRequests(); n != 2 {
		t.Errorf("%d exchanges, want 2 (none for the foreign tenant)", n)
	}
	if n := emulator.DiscoveryRequests(); n != 1 {
		t.Errorf("%d discovery requests in all, want 1", n)
	}
}

// While the domain cannot be resolved, a user's token is neither checked
// nor exchanged: the request is answered 503 with Retry-After, without the
// token, and the next request within the backoff asks nobody.
func TestOnBehalfOfUnresolvedDomainTenantAnswersRetryably(t *testing.T) {
	app, emulator, logs := apptest.NewOnBehalfOfApp(t, func(a *entraapp.Application) { a.TenantID = homeDomain })
	home := apptest.UserToken(t, emulator, userA, "", 0)
	for range 2 {
		rec, seen := serveOBO(t, app, "Bearer "+home, nil)
		var body entraapp.ErrorBody
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusServiceUnavailable || body.Code != entraapp.CodeTokenRequestFailed ||
			rec.Header().Get("Retry-After") != "1" || seen != nil {
			t.Fatalf("answered %d %s, Retry-After %q, downstream called %t; want 503 %s, 1",
				rec.Code, body.Code, rec.Header().Get("Retry-After"), seen != nil, entraapp.CodeTokenRequestFailed)
		}
		if strings.Contains(rec.Body.String(), strings.Split(home, ".")[1]) {
			t.Error("the answer holds the user's token")
		}
	}
	if n := emulator.DiscoveryRequests(); n != 1 {
		t.Errorf("%d discovery requests, want 1 (the second request within the backoff)", n)
	}
	if n := emulator.OnBehalfOfRequests(); n != 0 {
		t.Errorf("%d exchanges, want 0", n)
	}
	for _, entry := range logs.All() {
		line, _ := json.Marshal(entry.ContextMap())
		if strings.Contains(string(line)+entry.Message, strings.Split(home, ".")[1]) {
			t.Errorf("log %q holds the user's token", entry.Message)
		}
	}
}

// A slow OpenID configuration holds a request with a user's token at most
// wait_timeout: it is then answered 503 with Retry-After, as any request
// that could not have its token in time.
func TestOnBehalfOfDomainTenantResolutionWaitsAtMostWaitTimeout(t *testing.T) {
	release := make(chan struct{})
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(stalled.Close)
	t.Cleanup(func() { close(release) })
	app := &entraapp.App{
		IdentityConfig: entraapp.IdentityConfig{AuthorityHost: stalled.URL, TenantID: homeDomain,
			ClientID: apptest.ClientID, ClientSecret: apptest.ClientSecret},
		WaitTimeout: caddy.Duration(200 * time.Millisecond),
		Applications: map[string]*entraapp.Application{
			apptest.OnBehalfOfApplication: {Scopes: []string{apptest.OnBehalfOfScope}, OnBehalfOf: &entraapp.OnBehalfOfConfig{}},
		},
	}
	if err := app.ProvisionForTest(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Cleanup() })
	done := make(chan error, 1)
	go func() {
		_, err := app.ExchangeUserToken(t.Context(), apptest.OnBehalfOfApplication, "a.b.c", "bearer token in Authorization")
		done <- err
	}()
	select {
	case err := <-done:
		answer := entraapp.AnswerFor(err)
		if answer.Status != http.StatusServiceUnavailable || answer.Code != entraapp.CodeTokenRequestFailed || answer.RetryAfter <= 0 {
			t.Errorf("answered %d %s, Retry-After %v; want 503 %s with Retry-After", answer.Status, answer.Code, answer.RetryAfter, entraapp.CodeTokenRequestFailed)
		}
	case <-time.After(3 * time.Second): // the entra client's own timeout is 10 s
		t.Fatal("a request waited past wait_timeout (200ms) for the tenant's resolution")
	}
}
