package entraapp

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

const oboApplication = "graph-as-user"

// newOBOTestApp is newTestApp with the on-behalf-of application
// graph-as-user, which accepts users of oboOtherTenant too, its config
// adjusted by adjust (if not nil).
func newOBOTestApp(t *testing.T, adjust func(*App)) (*App, *entratest.Emulator) {
	t.Helper()
	app, emulator, _ := newTestAppWith(t, unitClientSecret, func(a *App) {
		a.Applications[oboApplication] = &Application{Scopes: []string{"https://graph.microsoft.com/User.Read"},
			OnBehalfOf: &OnBehalfOfConfig{AllowedTenants: []string{oboOtherTenant}}}
		if adjust != nil {
			adjust(a)
		}
	})
	if err := emulator.AddTenant(oboOtherTenant); err != nil {
		t.Fatal(err)
	}
	return app, emulator
}

// reloadOBO provisions running's config, adjusted by adjust (if not nil),
// as a reload does, then cleans running up.
func reloadOBO(t *testing.T, running *App, adjust func(*App)) *App {
	t.Helper()
	next := provisionCopy(t, running, adjust)
	if err := running.Cleanup(); err != nil {
		t.Fatal(err)
	}
	return next
}

// provisionCopy provisions a copy of a's config, adjusted by adjust (if
// not nil).
func provisionCopy(t *testing.T, a *App, adjust func(*App)) *App {
	t.Helper()
	raw, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	next := &App{logger: a.logger}
	if err := json.Unmarshal(raw, next); err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(next)
	}
	if err := next.provision(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = next.Cleanup() })
	return next
}

// userToken is a token of the user oid in tenant (the emulator's when
// empty) for graph-as-user's client.
func userToken(t *testing.T, emulator *entratest.Emulator, oid, tenant string) string {
	t.Helper()
	token, err := emulator.IssueUserToken(entratest.UserToken{ObjectID: oid, TenantID: tenant, Audience: "api://" + unitClientID})
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// exchangeStatus is the status a request of graph-as-user with userToken
// is answered: 200 for a token.
func exchangeStatus(app *App, userToken string) int {
	if _, err := app.ExchangeUserToken(context.Background(), oboApplication, userToken, "bearer token in Authorization"); err != nil {
		return AnswerFor(err).Status
	}
	return http.StatusOK
}

const (
	oboUserA = "0a0a0a0a-0000-4000-8000-00000000000a"
	oboUserB = "0b0b0b0b-0000-4000-8000-00000000000b"
	oboUserC = "0c0c0c0c-0000-4000-8000-00000000000c"
	oboUserE = "0e0e0e0e-0000-4000-8000-00000000000e"
	oboUserR = "0d0d0d0d-0000-4000-8000-00000000000d" // refused: a claims challenge
)

// A reload that leaves an on-behalf-of application's exchanges as they
// were keeps its exchanged tokens, its refusals and its per-tenant
// backoffs, as it keeps client-credential tokens, and its metrics count.
func TestOnBehalfOfReloadKeepsExchangesRefusalsAndBackoffs(t *testing.T) {
	app, emulator := newOBOTestApp(t, nil)
	userA := userToken(t, emulator, oboUserA, "")
	emulator.ChallengeUser(oboUserR, `{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}`)
	refused := userToken(t, emulator, oboUserR, "")
	if got := exchangeStatus(app, userA); got != http.StatusOK {
		t.Fatalf("user A: %d", got)
	}
	if got := exchangeStatus(app, refused); got != http.StatusUnauthorized {
		t.Fatalf("the challenged user: %d, want 401", got)
	}

	app = reloadOBO(t, app, nil)
	hits := counter(onBehalfOfResults, oboApplication, string(tokencache.ExchangeHit))
	if got := exchangeStatus(app, userA); got != http.StatusOK {
		t.Fatalf("user A after the reload: %d", got)
	}
	if got := exchangeStatus(app, refused); got != http.StatusUnauthorized {
		t.Fatalf("the challenged user after the reload: %d, want 401", got)
	}
	if n := emulator.OnBehalfOfRequests(); n != 2 {
		t.Errorf("user A exchanged and a user refused, then a reload, then both again: %d exchanges, want 2", n)
	}
	if got := counter(onBehalfOfResults, oboApplication, string(tokencache.ExchangeHit)) - hits; got != 1 {
		t.Errorf("user A's hit after the reload counted %v times, want 1", got)
	}
	if got := exchangeStatus(app, userToken(t, emulator, oboUserB, "")); got != http.StatusOK {
		t.Fatalf("user B, exchanged after the reload: %d", got)
	}

	// Entra throttles the home tenant for 60 s; a reload keeps the pause.
	emulator.FailNext(1, entratest.Failure{Status: http.StatusTooManyRequests, RetryAfter: "60"})
	if got := exchangeStatus(app, userToken(t, emulator, oboUserC, "")); got != http.StatusServiceUnavailable {
		t.Fatalf("throttled exchange: %d, want 503", got)
	}
	before := emulator.OnBehalfOfRequests()
	app = reloadOBO(t, app, nil)
	if got := exchangeStatus(app, userToken(t, emulator, oboUserE, "")); got != http.StatusServiceUnavailable {
		t.Errorf("within Entra's Retry-After, after a reload: %d, want 503", got)
	}
	if n := emulator.OnBehalfOfRequests() - before; n != 0 {
		t.Errorf("within Entra's Retry-After of 60 s, a reload let %d exchange(s) through, want 0", n)
	}
}

// A reload that changes what an on-behalf-of application's exchanges are
// (its identity, scopes or max_users) exchanges again, never serving the
// old config's token; one that changes the checks of users' tokens checks
// every request with the new ones, those with a user's exchanged token too.
func TestOnBehalfOfReloadChangingTheExchangesStartsAfresh(t *testing.T) {
	for _, tt := range []struct {
		name          string
		tenant        string // the user's; "" the emulator's
		adjust        func(a *App, obo *Application)
		wantStatus    int
		wantExchanges int64
	}{
		{"scopes", "", func(_ *App, obo *Application) { obo.Scopes = []string{"https://graph.microsoft.com/Mail.Read"} }, http.StatusOK, 2},
		{"identity", "", func(a *App, _ *Application) { a.ClientCapabilities = []string{"cp1"} }, http.StatusOK, 2},
		{"client_auth", "", func(a *App, _ *Application) { a.ClientAuth = "basic" }, http.StatusOK, 2},
		{"max_users", "", func(_ *App, obo *Application) { obo.OnBehalfOf.MaxUsers = 5 }, http.StatusOK, 2},
		{"allowed_tenants", oboOtherTenant, func(_ *App, obo *Application) { obo.OnBehalfOf.AllowedTenants = nil }, http.StatusUnauthorized, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			app, emulator := newOBOTestApp(t, nil)
			user := userToken(t, emulator, oboUserA, tt.tenant)
			if got := exchangeStatus(app, user); got != http.StatusOK {
				t.Fatalf("before the reload: %d", got)
			}
			app = reloadOBO(t, app, func(a *App) { tt.adjust(a, a.Applications[oboApplication]) })
			if got := exchangeStatus(app, user); got != tt.wantStatus {
				t.Errorf("after the reload: %d, want %d", got, tt.wantStatus)
			}
			if n := emulator.OnBehalfOfRequests(); n != tt.wantExchanges {
				t.Errorf("%d exchanges, want %d", n, tt.wantExchanges)
			}
		})
	}
}

// A reload with a rotated secret, after Entra refused the old one (a
// permanent failure, which pauses the exchanges for 5 s to 5 min),
// exchanges with the new secret at once.
func TestOnBehalfOfReloadWithARotatedSecretIsNotPausedByTheOldOnesFailure(t *testing.T) {
	app, emulator := newOBOTestApp(t, nil)
	if got := exchangeStatus(app, userToken(t, emulator, oboUserA, "")); got != http.StatusOK {
		t.Fatalf("user A: %d", got)
	}
	emulator.AddClient(unitClientID, "rotated-"+unitClientSecret) // the running config's secret is refused
	if got := exchangeStatus(app, userToken(t, emulator, oboUserB, "")); got == http.StatusOK {
		t.Fatalf("user B with the old secret: %d, want a failure", got)
	}
	before := emulator.OnBehalfOfRequests()
	app = reloadOBO(t, app, func(a *App) { a.ClientSecret = "rotated-" + unitClientSecret })
	if got := exchangeStatus(app, userToken(t, emulator, oboUserC, "")); got != http.StatusOK {
		t.Errorf("user C after a reload with the rotated secret: %d, want 200 (%d exchanges made)", got, emulator.OnBehalfOfRequests()-before)
	}
}

// Configs that load as far as their exchangers and then fail (Caddy
// cleans them up without starting them), with the same exchanges or other
// scopes, neither close the running config's exchanger nor leave one
// behind.
func TestOnBehalfOfFailedReloadsKeepTheRunningExchanger(t *testing.T) {
	app, emulator := newOBOTestApp(t, sealedRedis(miniredis.RunT(t)))
	userA := userToken(t, emulator, oboUserA, "")
	if got := exchangeStatus(app, userA); got != http.StatusOK {
		t.Fatalf("user A: %d", got)
	}
	for range 5 {
		for _, adjust := range []func(*App){nil, func(a *App) {
			a.Applications[oboApplication].Scopes = []string{"https://graph.microsoft.com/Mail.Read"}
		}} {
			failed := provisionCopy(t, app, adjust)
			if err := failed.Cleanup(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := pooledExchangers(); n != 1 {
		t.Errorf("%d exchangers pooled after failed reloads, want the running config's", n)
	}
	if got := exchangeStatus(app, userA); got != http.StatusOK || emulator.OnBehalfOfRequests() != 1 {
		t.Errorf("user A after failed reloads: %d, %d exchanges; want a hit", got, emulator.OnBehalfOfRequests())
	}
}

// pooledExchangers counts the exchangers exchangerPool holds.
func pooledExchangers() int {
	n := 0
	exchangerPool.Range(func(any, any) bool {
		n++
		return true
	})
	return n
}

// sealedRedis makes a config share tokens, and exchanged ones, through mr.
func sealedRedis(mr *miniredis.Miniredis) func(*App) {
	return func(a *App) {
		a.Redis = &RedisConfig{URL: "redis://" + mr.Addr(), EncryptionKeys: []string{"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}}
	}
}

// An exchanger carried over a reload still hears the fleet's drops: the
// old config's cleanup did not close it.
func TestOnBehalfOfCarriedOverExchangerHearsTheFleetsDrops(t *testing.T) {
	app, emulator := newOBOTestApp(t, sealedRedis(miniredis.RunT(t)))
	// Another replica: other cache settings make another cache and Redis client.
	replica := provisionCopy(t, app, func(a *App) { a.WaitTimeout = caddy.Duration(7 * time.Second) })
	userA := userToken(t, emulator, oboUserA, "")
	for _, a := range []*App{replica, app} {
		if got := exchangeStatus(a, userA); got != http.StatusOK {
			t.Fatalf("user A: %d", got)
		}
	}
	app = reloadOBO(t, app, nil)
	carried := app.exchangers[oboApplication]
	if n := carried.Len(); n != 1 {
		t.Fatalf("%d exchanged tokens after the reload, want user A's", n)
	}
	if !replica.DropExchanged(context.Background(), oboApplication, userA, "") {
		t.Fatal("the other replica did not drop user A's token")
	}
	for deadline := time.Now().Add(5 * time.Second); carried.Len() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // the announcement comes through Redis
	}
	if carried.Len() > 0 {
		t.Fatal("the other replica's drop never reached the carried-over exchanger")
	}
	if got := exchangeStatus(app, userA); got != http.StatusOK || emulator.OnBehalfOfRequests() != 2 {
		t.Errorf("user A after the drop: %d, %d exchanges; want a new exchange", got, emulator.OnBehalfOfRequests())
	}
}

// Reloads that alternate an application's scopes make an exchanger each
// and close (stopping its watcher of the fleet's drops) the one left
// behind; reloads that keep them carry the running one over; once the
// last config is cleaned up, no exchanger is left.
func TestOnBehalfOfReloadCyclesLeaveNothingBehind(t *testing.T) {
	app, emulator := newOBOTestApp(t, sealedRedis(miniredis.RunT(t)))
	userA := userToken(t, emulator, oboUserA, "")
	if got := exchangeStatus(app, userA); got != http.StatusOK {
		t.Fatalf("user A: %d", got)
	}
	baseline := runtime.NumGoroutine()
	for i := range 10 {
		scope := []string{"https://graph.microsoft.com/Mail.Read", "https://graph.microsoft.com/User.Read"}[i%2]
		app = reloadOBO(t, app, func(a *App) { a.Applications[oboApplication].Scopes = []string{scope} })
		app = reloadOBO(t, app, nil) // carried over
		if got := exchangeStatus(app, userA); got != http.StatusOK {
			t.Fatalf("user A: %d", got)
		}
	}
	if n := pooledExchangers(); n != 1 {
		t.Errorf("%d exchangers pooled after 20 reloads, want the running config's only", n)
	}
	now := runtime.NumGoroutine()
	for deadline := time.Now().Add(5 * time.Second); now > baseline+3 && time.Now().Before(deadline); now = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond) // a closed watcher ends on its own
	}
	if now > baseline+3 {
		t.Errorf("%d goroutines after 20 reloads, %d before", now, baseline)
	}
	if err := app.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if n := pooledExchangers(); n != 0 {
		t.Errorf("%d exchangers pooled once every config was cleaned up, want 0", n)
	}
}

// federatedOBOApp is an app whose on-behalf-of application exchanges
// with a federated token file, and project, which writes a new token to
// the file as the kubelet does.
func federatedOBOApp(t *testing.T) (app *App, emulator *entratest.Emulator, project func()) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "azure-identity-token")
	app, emulator, _ = newTestAppWith(t, unitClientSecret, func(a *App) {
		a.Applications[oboApplication] = &Application{Scopes: []string{"https://graph.microsoft.com/User.Read"},
			OnBehalfOf: &OnBehalfOfConfig{}}
	})
	// Switch to the federated credential (the emulator exists only now).
	const issuer, subject = "https://oidc.example/cluster", "system:serviceaccount:orders:sidecar"
	emulator.AddFederatedClient(unitClientID, issuer, subject)
	project = func() {
		t.Helper()
		token, err := emulator.IssueFederatedToken(issuer, subject, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	project()
	app = reloadOBO(t, app, func(a *App) {
		a.IdentityConfig.ClientSecret = ""
		a.IdentityConfig.FederatedTokenFile = tokenFile
	})
	return app, emulator, project
}

// An on-behalf-of application with a federated token file keeps its
// exchanged tokens across a reload, as with a secret, when the kubelet
// rotated the file in between.
func TestOnBehalfOfExchangesAreKeptAcrossAFederatedTokenRotation(t *testing.T) {
	app, emulator, project := federatedOBOApp(t)
	userA := userToken(t, emulator, oboUserA, "")
	if got := exchangeStatus(app, userA); got != http.StatusOK {
		t.Fatalf("user A: %d", got)
	}
	before := emulator.OnBehalfOfRequests()
	project() // the kubelet writes a new token
	app = reloadOBO(t, app, nil)
	if got := exchangeStatus(app, userA); got != http.StatusOK {
		t.Fatalf("user A after the reload: %d", got)
	}
	if n := emulator.OnBehalfOfRequests() - before; n != 0 {
		t.Errorf("a reload after the kubelet rotated the token file re-exchanged user A's token (%d exchanges): the exchanger was not kept", n)
	}
}

// Entra refuses the application's federated token in an on-behalf-of
// exchange (AADSTS700024: the kubelet stopped rotating it): the tenant's
// exchanges pause for that token, and resume as soon as the kubelet writes
// a new one, with or without a reload.
func TestOnBehalfOfPauseForAFederatedTokenEndsWithItsRotation(t *testing.T) {
	app, emulator, project := federatedOBOApp(t)
	emulator.FailNext(1, entratest.Failure{Status: http.StatusUnauthorized, Error: "invalid_client",
		ErrorCodes: []int{700024}, Description: "Client assertion is not within its valid time range."})
	if got := exchangeStatus(app, userToken(t, emulator, oboUserA, "")); got == http.StatusOK {
		t.Fatalf("the refused exchange answered 200")
	}
	if got := exchangeStatus(app, userToken(t, emulator, oboUserB, "")); got == http.StatusOK {
		t.Fatalf("another user with the refused token answered 200: the refusal paused nothing")
	}
	project() // the kubelet writes a new, good token
	if got := exchangeStatus(app, userToken(t, emulator, oboUserB, "")); got != http.StatusOK {
		t.Errorf("user B after the kubelet wrote a new token: %d, want 200: paused by the old token's refusal", got)
	}
	app = reloadOBO(t, app, nil)
	if got := exchangeStatus(app, userToken(t, emulator, oboUserB, "")); got != http.StatusOK {
		t.Errorf("user B after a reload too: %d, want 200", got)
	}
}
