package entratokenendpoint

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

// recordPost is a record request's POST with body.
func recordPost(body any) *http.Request {
	raw, _ := json.Marshal(body)
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080/token", strings.NewReader(string(raw)))
	req.RemoteAddr = "127.0.0.1:40000"
	req.Header.Set("X-IDENTITY-HEADER", unitEndpointSecret)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// The record protocol exchanges too: a request naming an on-behalf-of
// application and carrying the user's token (assertion) gets the record of
// the token exchanged for that user, or the refusal with its challenge.
func TestEndpointRecordExchangesTheAssertion(t *testing.T) {
	app, emulator, logs := apptest.NewOnBehalfOfApp(t, nil)
	e, _ := newTestEndpoint(t, app, ProtocolRecord, nil)
	const oid = "0a0a0a0a-0000-4000-8000-00000000000a"
	userToken := apptest.UserToken(t, emulator, oid, "", 0)
	var first string
	for range 2 {
		rec, body := call(t, e, recordPost(map[string]string{"applicationName": apptest.OnBehalfOfApplication, "assertion": userToken}))
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %v", rec.Code, body)
		}
		token, _ := body["accessToken"].(string)
		claims, err := emulator.Verify(token)
		if err != nil || claims.ObjectID != oid || body["applicationName"] != apptest.OnBehalfOfApplication {
			t.Fatalf("the record's token (%v) is not the user's exchanged token", err)
		}
		if first == "" {
			first = token
		} else if token != first {
			t.Error("the second request did not get the cached exchange")
		}
	}
	if n := emulator.OnBehalfOfRequests(); n != 1 {
		t.Errorf("%d exchanges, want 1", n)
	}

	// No assertion (a GET cannot carry one): 401 with the challenge.
	get := endpointRequest(http.MethodGet, "/token?applicationName="+apptest.OnBehalfOfApplication,
		map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret})
	rec, body := call(t, e, get)
	if rec.Code != http.StatusUnauthorized || body["code"] != entraapp.CodeUserTokenMissing ||
		rec.Header().Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
		t.Errorf("without an assertion: %d %v %q, want 401 %s", rec.Code, body, rec.Header().Get("WWW-Authenticate"), entraapp.CodeUserTokenMissing)
	}
	if msg, _ := body["message"].(string); msg != "the request carries no assertion" {
		t.Errorf("without an assertion: message %q, want one naming the assertion", msg)
	}
	// One that is not a JWT: the message names the assertion too.
	rec, body = call(t, e, recordPost(map[string]string{"applicationName": apptest.OnBehalfOfApplication, "assertion": "not-a-jwt"}))
	if msg, _ := body["message"].(string); rec.Code != http.StatusUnauthorized || msg != "the assertion is not a JWT" {
		t.Errorf("an assertion that is not a JWT: %d %q, want 401 naming the assertion", rec.Code, msg)
	}

	// A claims challenge: 401 with insufficient_claims.
	const challenged = "0d0d0d0d-0000-4000-8000-00000000000d"
	emulator.ChallengeUser(challenged, `{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`)
	rec, body = call(t, e, recordPost(map[string]string{"applicationName": apptest.OnBehalfOfApplication,
		"assertion": apptest.UserToken(t, emulator, challenged, "", 0)}))
	if rec.Code != http.StatusUnauthorized || body["code"] != entraapp.CodeInteractionRequired ||
		!strings.Contains(rec.Header().Get("WWW-Authenticate"), `error="insufficient_claims", claims="`) {
		t.Errorf("claims challenge: %d %v %q, want 401 %s with the challenge", rec.Code, body, rec.Header().Get("WWW-Authenticate"), entraapp.CodeInteractionRequired)
	}
	assertNoTokenInLogs(t, logs, userToken)
	assertNoTokenInLogs(t, logs, first)
}

// The managed-identity protocols carry no user's token: they leave
// on-behalf-of applications out, and refuse one named.
func TestEndpointManagedIdentityProtocolsLeaveOnBehalfOfOut(t *testing.T) {
	app, _, _ := apptest.NewOnBehalfOfApp(t, func(a *entraapp.Application) {
		a.Scopes = []string{"api://downstream/.default"} // a resource a managed-identity client could name
	})
	for _, protocol := range []string{ProtocolAppService, ProtocolIMDS} {
		e, _ := newTestEndpoint(t, app, protocol, nil)
		if _, ok := e.allowed[apptest.OnBehalfOfApplication]; ok {
			t.Errorf("%s hands out the on-behalf-of application", protocol)
		}
		e = &TokenEndpoint{Protocol: protocol, Applications: []string{apptest.OnBehalfOfApplication}}
		if protocol != ProtocolIMDS {
			e.Secret = unitEndpointSecret
		}
		if err := e.provision(app); err == nil || !strings.Contains(err.Error(), "exchanges users' tokens") {
			t.Errorf("%s naming the on-behalf-of application: %v", protocol, err)
		}
	}
}
