package entra_test

import (
	"context"
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
	vars := []string{"ENTRA_TENANT_ID", "ENTRA_CLIENT_ID", "ENTRA_CLIENT_SECRET", "ENTRA_TEST_SCOPE"}
	var missing []string
	for _, name := range vars {
		if os.Getenv(name) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Skipf("live Entra ID test skipped: set ENTRA_TENANT_ID, ENTRA_CLIENT_ID, ENTRA_CLIENT_SECRET and ENTRA_TEST_SCOPE to run it (missing: %s)", strings.Join(missing, ", "))
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
