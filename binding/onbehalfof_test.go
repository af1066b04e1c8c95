package binding

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

func TestRejectedUserTokenTellsTheUsersFailureFromTheApplications(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		remember time.Duration
		rejected bool
	}{
		{"invalid grant", &entra.RequestError{OnBehalfOf: true, StatusCode: 400, Code: "invalid_grant", ErrorCodes: []int{50013}},
			userRefusalMemory, true},
		{"claims challenge", &entra.RequestError{OnBehalfOf: true, StatusCode: 400, Code: "invalid_grant", ErrorCodes: []int{50076},
			Claims: `{"access_token":{}}`}, userRefusalMemory, true},
		{"consent, wrapped", fmt.Errorf("exchanging: %w", &entra.RequestError{OnBehalfOf: true, StatusCode: 400,
			Code: "invalid_grant", ErrorCodes: []int{65001}}), ConsentRetry, true},
		{"invalid client", &entra.RequestError{OnBehalfOf: true, StatusCode: 401, Code: "invalid_client", ErrorCodes: []int{7000215}}, 0, false},
		{"throttled", &entra.RequestError{OnBehalfOf: true, StatusCode: 429}, 0, false},
		{"unavailable", &entra.RequestError{OnBehalfOf: true, StatusCode: 503}, 0, false},
		{"client credentials", &entra.RequestError{StatusCode: 400, Code: "invalid_grant"}, 0, false},
		{"other error", errors.New("boom"), 0, false},
	}
	for _, tt := range tests {
		remember, rejected := RejectedUserToken(tt.err)
		if remember != tt.remember || rejected != tt.rejected {
			t.Errorf("%s: got %s, %v; want %s, %v", tt.name, remember, rejected, tt.remember, tt.rejected)
		}
	}
}

// A token shared as a user's entry is used only when it names that user,
// their tenant and the application: a replica holding the fleet's key
// cannot make one user act as another.
func TestSharedExchangedTokenMustNameTheUserTenantAndClient(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	const clientID, otherClient = "0e5e3f9c-1111-4a2b-9c3d-0000000000b1", "0e5e3f9c-1111-4a2b-9c3d-0000000000b2"
	scopes := []string{"https://graph.microsoft.com/User.Read"}
	exchanged := func(id, oid string) (userToken, downstream string) {
		emu.AddClient(id, "s")
		emu.SetConsent(id, scopes[0], true)
		client := mustClient(t, srv.URL, emu.TenantID(), id)
		userToken, err := emu.IssueUserToken(entratest.UserToken{ObjectID: oid, Audience: "api://" + id})
		if err != nil {
			t.Fatal(err)
		}
		user, err := entra.ReadUserAssertion(userToken, time.Now(), entra.UserTokenRules{TenantID: emu.TenantID(), ClientID: id})
		if err != nil {
			t.Fatal(err)
		}
		token, err := client.OnBehalfOf(t.Context(), user, scopes)
		if err != nil {
			t.Fatal(err)
		}
		return userToken, token.AccessToken
	}
	userA, forA := exchanged(clientID, "00000000-0000-4000-8000-00000000000a")
	_, forB := exchanged(clientID, "00000000-0000-4000-8000-00000000000b")
	_, forAOther := exchanged(otherClient, "00000000-0000-4000-8000-00000000000a")
	verify := ExchangeOptions("graph-as-user", mustClient(t, srv.URL, emu.TenantID(), clientID), scopes, 0, 1, nil).VerifyShared
	claims, _ := entra.ReadPublicClaims(userA)
	// unsigned returns an unsigned JWT of claims: the check reads, it does not verify.
	unsigned := func(claims string) string {
		b64 := base64.RawURLEncoding.EncodeToString
		return b64([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + b64([]byte(claims)) + ".c2ln"
	}
	for _, tt := range []struct {
		name, token, want string
	}{
		{"the user's own", forA, ""},
		{"another user's", forB, "another user (oid)"},
		{"another client's, same user", forAOther, "another client"},
		{"another tenant's, same user and client", unsigned(fmt.Sprintf(`{"oid":%q,"tid":"00000000-0000-4000-8000-0000000000f1","appid":%q}`,
			claims.ObjectID, clientID)), "another tenant (tid)"},
		{"v1.0 (appid only)", unsigned(fmt.Sprintf(`{"oid":%q,"tid":%q,"appid":%q,"ver":"1.0"}`, claims.ObjectID, claims.TenantID, clientID)), ""},
		{"v2.0 (azp only), GUIDs in upper case", unsigned(fmt.Sprintf(`{"oid":%q,"tid":%q,"azp":%q,"ver":"2.0"}`,
			strings.ToUpper(claims.ObjectID), strings.ToUpper(claims.TenantID), strings.ToUpper(clientID))), ""},
		{"opaque (a sealed store only)", "opaque-downstream-token", ""},
	} {
		err := verify(&tokencache.Record{AccessToken: tt.token}, userA)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

func mustClient(t *testing.T, authority, tenant, clientID string) *entra.Client {
	t.Helper()
	c, err := entra.NewClient(entra.Config{TenantID: tenant, ClientID: clientID, ClientSecret: "s", AuthorityHost: authority})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
