package entra_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

const (
	systemMI     = "00000000-0000-4000-8000-00000000a001"
	userMI       = "00000000-0000-4000-8000-00000000a002"
	vaultScope   = "https://vault.azure.net/.default"
	identityHdr  = "app-service-identity-header-secret"
	miTokenLife  = 24 * time.Hour
	vaultAudence = "https://vault.azure.net"
)

func miEmulator(t *testing.T) (*entratest.Emulator, *httptest.Server) {
	t.Helper()
	emu, srv, err := entratest.NewServer(entratest.Options{TokenLifetime: miTokenLife})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	emu.AddManagedIdentity(systemMI, true)
	emu.AddManagedIdentity(userMI, false)
	emu.SetIdentityHeader(identityHdr)
	return emu, srv
}

func TestManagedIdentity(t *testing.T) {
	emu, srv := miEmulator(t)
	imds := srv.URL + entratest.IMDSPath
	appService := srv.URL + entratest.AppServicePath
	tests := []struct {
		name     string
		cfg      entra.Config
		wantApp  string
		endpoint string
	}{
		{"IMDS system-assigned", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: imds}}, systemMI, imds},
		{"IMDS user-assigned", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: imds, ClientID: userMI}}, userMI, imds},
		{"IMDS user-assigned via client_id", entra.Config{ClientID: userMI, ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: imds}}, userMI, imds},
		{"App Service system-assigned", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IdentityEndpoint: appService, IdentityHeader: identityHdr}}, systemMI, appService},
		{"App Service user-assigned", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IdentityEndpoint: appService, IdentityHeader: identityHdr, ClientID: userMI}}, userMI, appService},
		// TenantID and authority settings are ignored, not validated.
		{"tenant ignored", entra.Config{TenantID: "a/b", AuthorityHost: "http://example.com", ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: imds}}, systemMI, imds},
	}
	identities := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := entra.NewClient(tt.cfg)
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			if client.CredentialType() != "managed_identity" || client.TokenEndpoint() != tt.endpoint || client.TenantID() != "" {
				t.Errorf("CredentialType, TokenEndpoint, TenantID = %q, %q, %q", client.CredentialType(), client.TokenEndpoint(), client.TenantID())
			}
			identities[client.Identity()] = true
			before := time.Now()
			token, err := client.Token(context.Background(), []string{vaultScope})
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			claims, err := emu.Verify(token.AccessToken)
			if err != nil {
				t.Fatal(err)
			}
			if claims.Audience != vaultAudence || claims.AppID != tt.wantApp {
				t.Errorf("aud, appid = %q, %q; want %q, %q", claims.Audience, claims.AppID, vaultAudence, tt.wantApp)
			}
			if token.ExpiresIn < miTokenLife-2*time.Second || token.ExpiresIn > miTokenLife {
				t.Errorf("ExpiresIn = %s, want about %s", token.ExpiresIn, miTokenLife)
			}
			if token.ExpiresAt.Before(before.Add(miTokenLife-2*time.Second)) || token.ExpiresAt.After(time.Now().Add(miTokenLife)) {
				t.Errorf("ExpiresAt = %s", token.ExpiresAt)
			}
		})
	}
	if len(identities) != 4 { // "tenant ignored" and "IMDS system-assigned" are one identity, and so are the two user-assigned over IMDS
		t.Errorf("%d distinct identities, want 4", len(identities))
	}
}

func TestManagedIdentityFromEnvironment(t *testing.T) {
	emu, srv := miEmulator(t)
	t.Setenv("IDENTITY_ENDPOINT", srv.URL+entratest.AppServicePath)
	t.Setenv("IDENTITY_HEADER", identityHdr)
	client, err := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{}})
	if err != nil {
		t.Fatal(err)
	}
	if client.TokenEndpoint() != srv.URL+entratest.AppServicePath {
		t.Errorf("TokenEndpoint() = %q", client.TokenEndpoint())
	}
	if _, err := client.Token(context.Background(), []string{vaultScope}); err != nil {
		t.Fatalf("Token: %v", err)
	}
	if emu.IssuedTokens() != 1 {
		t.Errorf("IssuedTokens = %d", emu.IssuedTokens())
	}

	// Only one of the two set: IMDS, at its default address.
	t.Setenv("IDENTITY_HEADER", "")
	client, err = entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{}})
	if err != nil {
		t.Fatal(err)
	}
	if client.TokenEndpoint() != entra.DefaultIMDSEndpoint {
		t.Errorf("TokenEndpoint() = %q, want the IMDS default", client.TokenEndpoint())
	}
}

func TestManagedIdentityRequestShape(t *testing.T) {
	type seen struct{ path, query, metadata, identityHeader, method string }
	requests := make(chan seen, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests <- seen{r.URL.Path, r.URL.RawQuery, r.Header.Get("Metadata"), r.Header.Get("X-Identity-Header"), r.Method}
		w.Header().Set("Content-Type", "application/json")
		// expires_on only, as an epoch number.
		_, _ = w.Write([]byte(`{"access_token":"tok","expires_on":` + itoa(time.Now().Add(time.Hour).Unix()) + `,"resource":"api://orders","token_type":"Bearer"}`))
	}))
	defer srv.Close()

	imds, err := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: srv.URL + "/imds", ClientID: userMI}})
	if err != nil {
		t.Fatal(err)
	}
	token, err := imds.Token(context.Background(), []string{"api://orders/.default"})
	if err != nil {
		t.Fatal(err)
	}
	if token.ExpiresIn < 59*time.Minute || token.ExpiresIn > time.Hour {
		t.Errorf("ExpiresIn from expires_on = %s", token.ExpiresIn)
	}
	got := <-requests
	if got != (seen{"/imds", "api-version=2018-02-01&client_id=" + userMI + "&resource=api%3A%2F%2Forders", "true", "", "GET"}) {
		t.Errorf("IMDS request = %+v", got)
	}

	appService, err := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IdentityEndpoint: srv.URL + "/msi", IdentityHeader: identityHdr}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := appService.Token(context.Background(), []string{"api://orders/.default"}); err != nil {
		t.Fatal(err)
	}
	got = <-requests
	if got != (seen{"/msi", "api-version=2019-08-01&resource=api%3A%2F%2Forders", "", identityHdr, "GET"}) {
		t.Errorf("App Service request = %+v", got)
	}
}

func TestManagedIdentityErrors(t *testing.T) {
	emu, srv := miEmulator(t)
	imds := srv.URL + entratest.IMDSPath
	appService := srv.URL + entratest.AppServicePath

	client, err := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: imds}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Token(context.Background(), []string{vaultScope, "api://other/.default"})
	if reqErr := requestError(t, err); !errors.Is(err, entra.ErrManagedIdentityScope) || !reqErr.PermanentFailure() {
		t.Errorf("two scopes: %v", err)
	}
	if emu.TokenRequests() != 0 {
		t.Error("a request was sent for two scopes")
	}

	emu.FailNext(1, entratest.Failure{Status: 503, RetryAfter: "5"})
	_, err = client.Token(context.Background(), []string{vaultScope})
	if reqErr := requestError(t, err); reqErr.StatusCode != 503 || reqErr.PermanentFailure() || reqErr.RetryAfterHint() != 5*time.Second {
		t.Errorf("503: %v", err)
	}

	unknown, _ := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: imds, ClientID: "nobody"}})
	_, err = unknown.Token(context.Background(), []string{vaultScope})
	if reqErr := requestError(t, err); reqErr.StatusCode != 400 || reqErr.Code != "invalid_request" || reqErr.Description != "Identity not found" || !reqErr.PermanentFailure() {
		t.Errorf("unknown identity: %v", err)
	}

	wrongHeader, _ := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IdentityEndpoint: appService, IdentityHeader: "wrong-" + identityHdr}})
	_, err = wrongHeader.Token(context.Background(), []string{vaultScope})
	reqErr := requestError(t, err)
	if reqErr.StatusCode != 401 || !strings.Contains(reqErr.Description, "X-IDENTITY-HEADER") || !reqErr.PermanentFailure() {
		t.Errorf("wrong identity header: %v", err)
	}
	assertNoLeak(t, err.Error(), identityHdr)
}

func TestManagedIdentityConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		cfg   entra.Config
		field string
	}{
		{"client IDs differ", entra.Config{ClientID: systemMI, ManagedIdentity: &entra.ManagedIdentityCredential{ClientID: userMI}}, "managed_identity"},
		{"endpoint without header", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IdentityEndpoint: "http://127.0.0.1:1/msi"}}, "managed_identity"},
		{"header without endpoint", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IdentityHeader: identityHdr}}, "managed_identity"},
		{"IMDS and App Service", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: "http://127.0.0.1:1/", IdentityEndpoint: "http://127.0.0.1:2/", IdentityHeader: "h"}}, "managed_identity"},
		{"bad IMDS endpoint", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: "169.254.169.254/metadata"}}, "managed_identity"},
		{"extra params", entra.Config{ExtraParams: map[string]string{"resource": "x"}, ManagedIdentity: &entra.ManagedIdentityCredential{}}, "token_request_param"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := entra.NewClient(tt.cfg)
			var cfgErr *entra.ConfigError
			if !errors.As(err, &cfgErr) || cfgErr.Field != tt.field {
				t.Fatalf("error = %v, want a %s ConfigError", err, tt.field)
			}
			assertNoLeak(t, err.Error(), identityHdr)
		})
	}
}
