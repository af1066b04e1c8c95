package entra_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-entra/caddy-entra/entra"
)

// TestLiveEntraID requests a real token from Entra ID, as the live test of
// better-auth-client-credential does. It runs only when ENTRA_TENANT_ID, ENTRA_CLIENT_ID,
// ENTRA_CLIENT_SECRET and ENTRA_TEST_SCOPE are set; ENTRA_AUTHORITY_HOST
// optionally overrides https://login.microsoftonline.com. It never prints
// the token or the secret.
func TestLiveEntraID(t *testing.T) {
	client := liveClient(t, "ENTRA_TEST_SCOPE")
	token, err := client.Token(context.Background(), strings.Fields(os.Getenv("ENTRA_TEST_SCOPE")))
	if err != nil {
		t.Fatalf("Token: %v", err) // a RequestError never carries the secret or a token
	}
	if token.TokenType != "Bearer" || token.ExpiresIn <= 0 || !token.ExpiresAt.After(time.Now()) {
		t.Fatalf("unexpected token: %v", token) // Token's formatting redacts the access token
	}

	// Entra's access tokens are JWTs; their signature is for the resource to
	// check, so only the structure and exp are checked here.
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token.AccessToken, &claims); err != nil {
		t.Fatal("access token is not a JWT") // err could quote the token: not printed
	}
	if claims.ExpiresAt == nil || !claims.ExpiresAt.After(time.Now()) {
		t.Fatalf("access token exp = %v, want in the future", claims.ExpiresAt)
	}
	t.Logf("got a token for %s from %s, expires in %s", os.Getenv("ENTRA_TEST_SCOPE"), client.TokenEndpoint(), token.ExpiresIn)
}

// TestLiveEntraOnBehalfOf exchanges a real user's token on the user's
// behalf. It runs only when, besides ENTRA_TENANT_ID, ENTRA_CLIENT_ID and
// ENTRA_CLIENT_SECRET, ENTRA_OBO_SCOPE (the downstream scopes, e.g.
// https://graph.microsoft.com/User.Read) and ENTRA_TEST_USER_TOKEN (a
// user's token for the application, e.g. from az account get-access-token
// --scope api://<client ID>/access_as_user) are set; ENTRA_OBO_AUDIENCES
// optionally lists other accepted audiences. It never prints a token.
func TestLiveEntraOnBehalfOf(t *testing.T) {
	client := liveClient(t, "ENTRA_OBO_SCOPE", "ENTRA_TEST_USER_TOKEN")
	if err := client.SupportsOnBehalfOf(); err != nil {
		t.Fatal(err)
	}
	user, err := entra.ReadUserAssertion(os.Getenv("ENTRA_TEST_USER_TOKEN"), time.Now(), entra.UserTokenRules{
		TenantID: client.TenantID(), ClientID: client.ClientID(), Audiences: strings.Fields(os.Getenv("ENTRA_OBO_AUDIENCES"))})
	if err != nil {
		t.Fatalf("ReadUserAssertion: %v", err) // names the check, never the token
	}
	token, err := client.OnBehalfOf(context.Background(), user, strings.Fields(os.Getenv("ENTRA_OBO_SCOPE")))
	if err != nil {
		var reqErr *entra.RequestError
		errors.As(err, &reqErr)
		t.Fatalf("OnBehalfOf: %v (user failure %q)", err, reqErr.UserFailure())
	}
	if claims, ok := entra.ReadPublicClaims(token.AccessToken); ok && claims.ObjectID != user.ObjectID {
		t.Errorf("the downstream token's oid is not the user's")
	}
	t.Logf("exchanged user %s's token for %s, expires in %s", user.ObjectID, os.Getenv("ENTRA_OBO_SCOPE"), token.ExpiresIn)
}

// liveClient skips the test unless ENTRA_TENANT_ID, ENTRA_CLIENT_ID,
// ENTRA_CLIENT_SECRET and the variables more are set, naming the missing
// ones, and returns a client of that application.
func liveClient(t *testing.T, more ...string) *entra.Client {
	t.Helper()
	vars := append([]string{"ENTRA_TENANT_ID", "ENTRA_CLIENT_ID", "ENTRA_CLIENT_SECRET"}, more...)
	var missing []string
	for _, name := range vars {
		if os.Getenv(name) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Skipf("live Entra ID test skipped: set %s to run it (missing: %s)", strings.Join(vars, ", "), strings.Join(missing, ", "))
	}
	client, err := entra.NewClient(entra.Config{
		TenantID:      os.Getenv("ENTRA_TENANT_ID"),
		ClientID:      os.Getenv("ENTRA_CLIENT_ID"),
		ClientSecret:  os.Getenv("ENTRA_CLIENT_SECRET"),
		AuthorityHost: os.Getenv("ENTRA_AUTHORITY_HOST"), // empty: the default
		Timeout:       30 * time.Second,
	})
	if err != nil {
		t.Fatalf("NewClient: %v", err) // a ConfigError never carries the secret
	}
	return client
}
