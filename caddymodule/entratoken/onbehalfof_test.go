package entratoken

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

const (
	userA = "0a0a0a0a-0000-4000-8000-00000000000a"
	userB = "0b0b0b0b-0000-4000-8000-00000000000b"
)

// downstream is what the handler handed on: the request's headers, or nil
// when next was not called.
type downstream struct{ header http.Header }

// serveOBO runs one request with Authorization authorization (none when
// empty) through entra_token for the on-behalf-of application; answer,
// when set, is downstream's.
func serveOBO(t *testing.T, app *entraapp.App, authorization string, answer http.HandlerFunc) (*httptest.ResponseRecorder, *downstream) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "http://sidecar/v1.0/me", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	return serveOBORequest(t, app, req, answer)
}

func serveOBORequest(t *testing.T, app *entraapp.App, req *http.Request, answer http.HandlerFunc) (*httptest.ResponseRecorder, *downstream) {
	t.Helper()
	h := &Handler{Application: apptest.OnBehalfOfApplication, app: app, logger: apptest.Logger(app), header: DefaultHeader}
	var seen *downstream
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		seen = &downstream{header: r.Header.Clone()}
		if answer != nil {
			answer(w, r)
			return nil
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return rec, seen
}

// verifiedDownstream returns the claims of the token downstream received.
func verifiedDownstream(t *testing.T, emulator *entratest.Emulator, seen *downstream) *entratest.Claims {
	t.Helper()
	if seen == nil {
		t.Fatal("downstream was not called")
	}
	values := seen.header.Values("Authorization")
	if len(values) != 1 || !strings.HasPrefix(values[0], "Bearer ") {
		t.Fatalf("downstream got %d Authorization values, want one bearer token", len(values))
	}
	claims, err := emulator.Verify(strings.TrimPrefix(values[0], "Bearer "))
	if err != nil {
		t.Fatalf("the downstream token does not verify: %v", err)
	}
	return claims
}

func TestOnBehalfOfReplacesTheUserTokenWithTheUsersDownstreamToken(t *testing.T) {
	app, emulator, logs := apptest.NewOnBehalfOfApp(t, nil)
	tokens := map[string]string{
		userA: apptest.UserToken(t, emulator, userA, "", 0),
		userB: apptest.UserToken(t, emulator, userB, apptest.AllowedTenant, 0),
	}
	for range 3 {
		for oid, userToken := range tokens {
			rec, seen := serveOBO(t, app, "Bearer "+userToken, nil)
			if rec.Code != http.StatusNoContent {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			claims := verifiedDownstream(t, emulator, seen)
			if claims.ObjectID != oid || claims.IdentityType != "user" || claims.Audience != "https://graph.microsoft.com" {
				t.Fatalf("downstream token of oid %q (idtyp %q, aud %q), want the user %s's Graph token", claims.ObjectID,
					claims.IdentityType, claims.Audience, oid)
			}
			if strings.Contains(seen.header.Get("Authorization"), userToken) {
				t.Fatal("the user's token reached downstream")
			}
		}
	}
	if n := emulator.OnBehalfOfRequests(); n != 2 {
		t.Errorf("%d exchanges for 2 users x 3 requests, want 2", n)
	}
	for _, entry := range logs.All() {
		line, _ := json.Marshal(entry.ContextMap())
		for _, userToken := range tokens {
			if strings.Contains(string(line)+entry.Message, strings.Split(userToken, ".")[1]) {
				t.Errorf("log %q holds a user token", entry.Message)
			}
		}
	}
}

func TestOnBehalfOfUserHeaderNeverReachesDownstream(t *testing.T) {
	app, emulator, _ := apptest.NewOnBehalfOfApp(t, func(a *entraapp.Application) { a.OnBehalfOf.Header = "x-user-token" })
	userToken := apptest.UserToken(t, emulator, userA, "", 0)
	req := httptest.NewRequest(http.MethodGet, "http://sidecar/v1.0/me", nil)
	req.Header.Set("X-User-Token", "Bearer "+userToken)
	req.Header.Set("Authorization", "Bearer forged")
	rec, seen := serveOBORequest(t, app, req, nil)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if claims := verifiedDownstream(t, emulator, seen); claims.ObjectID != userA {
		t.Errorf("downstream token of %q, want the user's", claims.ObjectID)
	}
	if v := seen.header.Values("X-User-Token"); len(v) != 0 {
		t.Error("the user's token header reached downstream")
	}
}

func TestOnBehalfOfRefusalsAnswerWithChallenges(t *testing.T) {
	const claimsJSON = `{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`
	tests := []struct {
		name          string
		authorization func(t *testing.T, e *entratest.Emulator) string
		setup         func(e *entratest.Emulator)
		status        int
		code          string
		challenge     func(authority string) string
		exchanges     int64
	}{
		{name: "no token", authorization: func(*testing.T, *entratest.Emulator) string { return "" },
			status: 401, code: entraapp.CodeUserTokenMissing, challenge: invalidToken},
		{name: "basic scheme", authorization: func(*testing.T, *entratest.Emulator) string { return "Basic Zm9vOmJhcg==" },
			status: 401, code: entraapp.CodeUserTokenMissing, challenge: invalidToken},
		{name: "not a JWT", authorization: func(*testing.T, *entratest.Emulator) string { return "Bearer opaque-token" },
			status: 401, code: entraapp.CodeUserTokenMissing, challenge: invalidToken},
		{name: "too large", authorization: func(t *testing.T, e *entratest.Emulator) string {
			return userAToken(t, e) + strings.Repeat("A", 16<<10)
		}, status: 401, code: entraapp.CodeUserTokenMissing, challenge: invalidToken},
		{name: "expired", authorization: func(t *testing.T, e *entratest.Emulator) string {
			return "Bearer " + apptest.UserToken(t, e, userA, "", -time.Minute)
		}, status: 401, code: entraapp.CodeUserTokenInvalid, challenge: invalidToken},
		{name: "foreign tenant", authorization: func(t *testing.T, e *entratest.Emulator) string {
			return "Bearer " + apptest.UserToken(t, e, userA, apptest.ForeignTenant, 0)
		}, status: 401, code: entraapp.CodeUserTokenInvalid, challenge: invalidToken},
		{name: "another audience", authorization: func(t *testing.T, e *entratest.Emulator) string {
			token, err := e.IssueUserToken(entratest.UserToken{ObjectID: userA, Audience: "api://another-api"})
			if err != nil {
				t.Fatal(err)
			}
			return "Bearer " + token
		}, status: 401, code: entraapp.CodeUserTokenInvalid, challenge: invalidToken},
		{name: "claims challenge", authorization: userAToken, setup: func(e *entratest.Emulator) { e.ChallengeUser(userA, claimsJSON) },
			status: 401, code: entraapp.CodeInteractionRequired, exchanges: 1, challenge: func(authority string) string {
				return `Bearer realm="", authorization_uri="` + authority + "/" + entratest.DefaultTenantID +
					`/oauth2/v2.0/authorize", error="insufficient_claims", claims="` + base64.StdEncoding.EncodeToString([]byte(claimsJSON)) + `"`
			}},
		{name: "consent missing", authorization: userAToken,
			setup:  func(e *entratest.Emulator) { e.SetConsent(apptest.ClientID, apptest.OnBehalfOfScope, false) },
			status: 403, code: entraapp.CodeConsentRequired, exchanges: 1, challenge: func(authority string) string {
				return `Bearer consentUri="` + authority + "/" + entratest.DefaultTenantID + "/oauth2/v2.0/authorize?client_id=" +
					apptest.ClientID + `&response_type=code&scope=https%3A%2F%2Fgraph.microsoft.com%2FUser.Read", claims="", scopes="` +
					apptest.OnBehalfOfScope + `", proposedAction="consent"`
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, emulator, _ := apptest.NewOnBehalfOfApp(t, nil)
			if tt.setup != nil {
				tt.setup(emulator)
			}
			rec, seen := serveOBO(t, app, tt.authorization(t, emulator), nil)
			if seen != nil {
				t.Error("downstream was called")
			}
			var body entraapp.ErrorBody
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != tt.status || body.Code != tt.code {
				t.Fatalf("answered %d %q (%s), want %d %s", rec.Code, body.Code, body.Message, tt.status, tt.code)
			}
			if got, want := rec.Header().Get("WWW-Authenticate"), tt.challenge(app.AuthorityHost); got != want {
				t.Errorf("WWW-Authenticate:\n got %s\nwant %s", got, want)
			}
			if n := emulator.OnBehalfOfRequests(); n != tt.exchanges {
				t.Errorf("%d exchanges, want %d", n, tt.exchanges)
			}
		})
	}
}

func invalidToken(string) string { return `Bearer error="invalid_token"` }

func userAToken(t *testing.T, e *entratest.Emulator) string {
	return "Bearer " + apptest.UserToken(t, e, userA, "", 0)
}

func TestOnBehalfOfRefusedTokenCostsOneExchangeAndNoBackoff(t *testing.T) {
	app, emulator, _ := apptest.NewOnBehalfOfApp(t, nil)
	emulator.ChallengeUser(userA, `{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}`)
	refused := userAToken(t, emulator)
	for range 1000 {
		if rec, _ := serveOBO(t, app, refused, nil); rec.Code != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", rec.Code)
		}
	}
	if n := emulator.OnBehalfOfRequests(); n != 1 {
		t.Fatalf("a refused user token replayed 1,000 times made %d exchanges, want 1", n)
	}
	if rec, _ := serveOBO(t, app, "Bearer "+apptest.UserToken(t, emulator, userB, "", 0), nil); rec.Code != http.StatusNoContent {
		t.Fatalf("another user after the refusals: status %d (%s), want the exchange (no backoff)", rec.Code, rec.Body)
	}
}

func TestOnBehalfOfDownstreamClaimsChallengePassesAndDropsTheEntry(t *testing.T) {
	app, emulator, _ := apptest.NewOnBehalfOfApp(t, nil)
	userToken := userAToken(t, emulator)
	const challenge = `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", ` +
		`client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnt9fQ=="`
	rec, _ := serveOBO(t, app, userToken, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("WWW-Authenticate", challenge)
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"code":"InvalidAuthenticationToken"}}`))
	})
	if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") != challenge ||
		rec.Body.String() != `{"error":{"code":"InvalidAuthenticationToken"}}` {
		t.Fatalf("the client got %d %q %q, want downstream's answer untouched", rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body)
	}
	if rec, _ := serveOBO(t, app, userToken, nil); rec.Code != http.StatusNoContent || emulator.OnBehalfOfRequests() != 2 {
		t.Fatalf("after the challenge: %d, %d exchanges; want a new exchange", rec.Code, emulator.OnBehalfOfRequests())
	}
	// A plain 401 keeps the entry.
	serveOBO(t, app, userToken, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	if serveOBO(t, app, userToken, nil); emulator.OnBehalfOfRequests() != 2 {
		t.Errorf("a 401 without a claims challenge dropped the entry")
	}
	// A downstream challenging every request cannot make each an exchange:
	// the entry was dropped less than 10 s ago, so it is kept.
	for range 50 {
		serveOBO(t, app, userToken, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("WWW-Authenticate", challenge)
			w.WriteHeader(http.StatusUnauthorized)
		})
	}
	if n := emulator.OnBehalfOfRequests(); n != 2 {
		t.Errorf("50 more challenged requests within 10 s made %d exchanges in all, want still 2", n)
	}
}

// TestOnBehalfOfUserTokenInATrailerGoesNoFurther: a user's token the
// client also sends as a request trailer does not reach downstream, whether the user's
// header is another than the injected one or the same. reverse_proxy
// sends the trailers read at the body's end (requestBodyWithTrailers); the
// test's next handler reads them as it does.
func TestOnBehalfOfUserTokenInATrailerGoesNoFurther(t *testing.T) {
	for _, tt := range []struct{ userHeader, injected string }{
		{"X-User-Token", DefaultHeader},  // on_behalf_of { header X-User-Token }
		{DefaultHeader, "X-Graph-Token"}, // on_behalf_of's default, entra_token { header X-Graph-Token }
		{DefaultHeader, DefaultHeader},
	} {
		t.Run(tt.userHeader+"->"+tt.injected, func(t *testing.T) {
			userTokenInTrailer(t, tt.userHeader, tt.injected)
		})
	}
}

// userTokenInTrailer is TestOnBehalfOfUserTokenInATrailerGoesNoFurther for
// one pair of headers.
func userTokenInTrailer(t *testing.T, userHeader, injected string) {
	app, emulator, _ := apptest.NewOnBehalfOfApp(t, func(a *entraapp.Application) { a.OnBehalfOf.Header = userHeader })
	userToken := apptest.UserToken(t, emulator, userA, "", 0)
	h := &Handler{Application: apptest.OnBehalfOfApplication, app: app, logger: apptest.Logger(app), header: injected}

	type seen struct {
		status  int
		trailer http.Header
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		var s seen
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, proxied *http.Request) error {
			// As reverse_proxy does: read the body to EOF, then send proxied.Trailer.
			if _, err := io.Copy(io.Discard, proxied.Body); err != nil {
				t.Error(err)
			}
			s.trailer = proxied.Trailer.Clone()
			w.WriteHeader(http.StatusNoContent)
			return nil
		})
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, r, next); err != nil {
			t.Error(err)
		}
		s.status = rec.Code
		got <- s
		w.WriteHeader(rec.Code)
	}))
	defer srv.Close()

	raw := "POST /v1.0/me HTTP/1.1\r\nHost: sidecar\r\nTransfer-Encoding: chunked\r\n" +
		userHeader + ": Bearer " + userToken + "\r\nTrailer: " + userHeader + "\r\n\r\n" +
		"5\r\nhello\r\n0\r\n" + userHeader + ": Bearer " + userToken + "\r\n\r\n"
	resp := rawRequest(t, srv.Listener.Addr().String(), raw)
	resp.Body.Close()
	s := <-got
	if s.status != http.StatusNoContent {
		t.Fatalf("status %d, want the exchange and downstream's 204", s.status)
	}
	for name, values := range s.trailer {
		for _, v := range values {
			if strings.Contains(v, userToken) {
				t.Errorf("the user's token reached downstream in the request trailer %s", name)
			}
		}
	}
}
