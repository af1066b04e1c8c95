package entra_test

import (
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

// A token endpoint's own identity: the tenant its path names as Entra's do
// is expected as a configured tenant would be; another server's endpoint
// expects no tenant, so its tokens (RFC 9068: client_id, no tid) are
// checked by client and expiry from the start, with no token of this
// replica's own first.
func TestTokenIdentityOfATokenEndpoint(t *testing.T) {
	expires := time.Now().Add(time.Hour)
	identity := func(endpoint string) *entra.TokenIdentity {
		t.Helper()
		c, err := entra.NewClient(entra.Config{TokenEndpoint: endpoint, ClientID: claimsClient, ClientSecret: "s"})
		if err != nil {
			t.Fatal(err)
		}
		return entra.NewTokenIdentity(c)
	}
	ours := jwtWith(t, map[string]any{"tid": claimsTenant, "appid": claimsClient})
	theirs := jwtWith(t, map[string]any{"tid": otherTenant, "appid": claimsClient})

	for _, endpoint := range []string{
		"https://login.microsoftonline.com/" + claimsTenant + "/oauth2/v2.0/token",
		"https://login.microsoftonline.com/" + claimsTenant + "/oauth2/token",
		"http://127.0.0.1:9400/prefix/" + claimsTenant + "/oauth2/v2.0/token",
	} {
		v := identity(endpoint)
		assertCheck(t, v.Check(ours, expires), "")
		assertCheck(t, v.Check(theirs, expires), "tid")
		v.Learn(theirs) // a configured tenant is never learned over
		assertCheck(t, v.Check(theirs, expires), "tid")
	}

	// A domain name in an Entra-shaped endpoint: learned, as tenant_id's.
	domain := identity("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
	assertCheck(t, domain.Check(ours, expires), "unverifiable")
	domain.Learn(ours)
	assertCheck(t, domain.Check(theirs, expires), "tid")

	// Another server's endpoint: the client at once, no tid needed; a tid
	// in the own first token is held to afterwards.
	for _, endpoint := range []string{"http://127.0.0.1:9000/token", "https://idp.example/oauth2/default/v1/token",
		"https://idp.example/realms/r/protocol/openid-connect/token", "https://idp.example/oauth2/token"} {
		v := identity(endpoint)
		rfc9068 := jwtWith(t, map[string]any{"client_id": claimsClient, "exp": expires.Unix()})
		assertCheck(t, v.Check(rfc9068, expires), "")
		assertCheck(t, v.Check(jwtWith(t, map[string]any{"client_id": otherClient}), expires), "client_id")
		assertCheck(t, v.Check(rfc9068, expires.Add(time.Hour)), "exp")
		assertCheck(t, v.Check("opaque", expires), "unverifiable")
		v.Learn(ours)
		assertCheck(t, v.Check(ours, expires), "")
		assertCheck(t, v.Check(theirs, expires), "tid")
	}
}
