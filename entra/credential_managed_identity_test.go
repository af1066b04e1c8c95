package entra_test

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
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

// miEmulator serves a host with a system-assigned identity (systemMI) and
// a user-assigned one (userMI, returned with its object and resource IDs).
func miEmulator(t *testing.T) (*entratest.Emulator, *httptest.Server, entratest.ManagedIdentity) {
	t.Helper()
	emu, srv, err := entratest.NewServer(entratest.Options{TokenLifetime: miTokenLife})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	emu.AddManagedIdentity(systemMI, true)
	user := emu.AddManagedIdentity(userMI, false)
	emu.SetIdentityHeader(identityHdr)
	return emu, srv, user
}

func TestManagedIdentity(t *testing.T) {
	emu, srv, user := miEmulator(t)
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
		{"IMDS by object ID", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: imds, ObjectID: user.ObjectID}}, userMI, imds},
		{"IMDS by resource ID", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: imds, ResourceID: user.ResourceID}}, userMI, imds},
		{"App Service by object ID", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IdentityEndpoint: appService, IdentityHeader: identityHdr, ObjectID: user.ObjectID}}, userMI, appService},
		{"App Service by resource ID", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IdentityEndpoint: appService, IdentityHeader: identityHdr, ResourceID: user.ResourceID}}, userMI, appService},
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
			identities[client.CacheKey()] = true
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
	// "tenant ignored" and "IMDS system-assigned" are one identity, and so
	// are the two user-assigned by client ID over IMDS; naming an identity
	// by another ID makes another cache identity (the sidecar cannot know
	// the IDs name the same identity).
	if len(identities) != 8 {
		t.Errorf("%d distinct identities, want 8", len(identities))
	}
}

// clearManagedIdentityEnvironment unsets, for t, every variable by which
// MSAL Go's GetSource recognises a managed identity environment, and the
// Azure Arc agent's file.
func clearManagedIdentityEnvironment(t *testing.T) {
	for _, name := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT",
		"IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET"} {
		t.Setenv(name, "")
	}
	entra.SetAzureArcAgentPath(t, filepath.Join(t.TempDir(), "no-himds"))
}

func TestManagedIdentityFromEnvironment(t *testing.T) {
	clearManagedIdentityEnvironment(t)
	emu, srv, _ := miEmulator(t)
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

// The environments MSAL takes for Service Fabric, Azure Machine Learning,
// Cloud Shell and Azure Arc are refused at load, naming the environment and
// the variables (never their values), instead of being taken for App
// Service (Service Fabric: another header, api-version and a pinned
// certificate) or sent to IMDS, which is not there (or is another cloud's).
// An endpoint in the config overrides the environment.
func TestManagedIdentityRefusesEnvironmentsItDoesNotSpeak(t *testing.T) {
	const endpointValue, secretValue = "http://127.0.0.1:1/env-endpoint", "env-secret-Do-Not-Log-7c1e"
	agent := filepath.Join(t.TempDir(), "himds")
	if err := os.WriteFile(agent, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		env   map[string]string
		agent string
		want  []string // in the message
	}{
		{"Service Fabric", map[string]string{"IDENTITY_ENDPOINT": endpointValue, "IDENTITY_HEADER": secretValue, "IDENTITY_SERVER_THUMBPRINT": "ABABABABABABABABABABABABABABABABABABABAB"},
			"", []string{"Service Fabric", "IDENTITY_SERVER_THUMBPRINT"}},
		{"Azure Machine Learning", map[string]string{"MSI_ENDPOINT": endpointValue, "MSI_SECRET": secretValue},
			"", []string{"Azure Machine Learning", "MSI_ENDPOINT", "MSI_SECRET"}},
		{"Cloud Shell", map[string]string{"MSI_ENDPOINT": endpointValue},
			"", []string{"Cloud Shell", "MSI_ENDPOINT"}},
		{"Azure Arc", map[string]string{"IDENTITY_ENDPOINT": endpointValue, "IMDS_ENDPOINT": "http://127.0.0.1:1"},
			"", []string{"Azure Arc", "IDENTITY_ENDPOINT", "IMDS_ENDPOINT"}},
		{"Azure Arc agent installed", nil, agent, []string{"Azure Arc", agent}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearManagedIdentityEnvironment(t)
			if tt.agent != "" {
				entra.SetAzureArcAgentPath(t, tt.agent)
			}
			for name, value := range tt.env {
				t.Setenv(name, value)
			}
			_, err := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{}})
			var cfgErr *entra.ConfigError
			if !errors.As(err, &cfgErr) || cfgErr.Field != "managed_identity" {
				t.Fatalf("error = %v, want a managed_identity ConfigError", err)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
			assertNoLeak(t, err.Error(), secretValue)
			if strings.Contains(err.Error(), endpointValue) {
				t.Errorf("error %q quotes a variable's value", err)
			}

			// An endpoint in the config is used as it is.
			for _, mi := range []entra.ManagedIdentityCredential{
				{IMDSEndpoint: "http://127.0.0.1:2/imds"},
				{IdentityEndpoint: "http://127.0.0.1:2/msi", IdentityHeader: identityHdr},
			} {
				client, err := entra.NewClient(entra.Config{ManagedIdentity: &mi})
				if err != nil {
					t.Fatalf("with endpoint set: %v", err)
				}
				if got := client.TokenEndpoint(); got != cmp.Or(mi.IMDSEndpoint, mi.IdentityEndpoint) {
					t.Errorf("TokenEndpoint() = %q", got)
				}
			}
		})
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

	// The name of each ID in each protocol.
	const objectID, resourceID = "11111111-2222-4333-8444-555555555555", "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/n"
	for _, tt := range []struct {
		credential entra.ManagedIdentityCredential
		wantQuery  string
	}{
		{entra.ManagedIdentityCredential{IMDSEndpoint: srv.URL + "/imds", ObjectID: objectID}, "api-version=2018-02-01&object_id=" + objectID + "&resource=api%3A%2F%2Forders"},
		{entra.ManagedIdentityCredential{IMDSEndpoint: srv.URL + "/imds", ResourceID: resourceID}, "api-version=2018-02-01&msi_res_id=" + url.QueryEscape(resourceID) + "&resource=api%3A%2F%2Forders"},
		{entra.ManagedIdentityCredential{IdentityEndpoint: srv.URL + "/msi", IdentityHeader: identityHdr, ObjectID: objectID}, "api-version=2019-08-01&principal_id=" + objectID + "&resource=api%3A%2F%2Forders"},
		{entra.ManagedIdentityCredential{IdentityEndpoint: srv.URL + "/msi", IdentityHeader: identityHdr, ResourceID: resourceID}, "api-version=2019-08-01&mi_res_id=" + url.QueryEscape(resourceID) + "&resource=api%3A%2F%2Forders"},
	} {
		client, err := entra.NewClient(entra.Config{ManagedIdentity: &tt.credential})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Token(context.Background(), []string{"api://orders/.default"}); err != nil {
			t.Fatal(err)
		}
		if got := <-requests; got.query != tt.wantQuery {
			t.Errorf("query = %s, want %s", got.query, tt.wantQuery)
		}
	}
}

func TestManagedIdentityErrors(t *testing.T) {
	emu, srv, _ := miEmulator(t)
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
		{"client and object IDs", entra.Config{ClientID: userMI, ManagedIdentity: &entra.ManagedIdentityCredential{ObjectID: systemMI}}, "managed_identity"},
		{"object and resource IDs", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{ObjectID: systemMI, ResourceID: "/subscriptions/x"}}, "managed_identity"},
		{"resource ID not a resource ID", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{ResourceID: userMI}}, "managed_identity"},
		{"object ID with a space", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{ObjectID: "a b"}}, "managed_identity"},
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

// A managed identity endpoint that is not a URL is refused naming which
// endpoint it is.
func TestManagedIdentityEndpointErrorsNameTheEndpoint(t *testing.T) {
	for want, mi := range map[string]*entra.ManagedIdentityCredential{
		"imds_endpoint must":     {IMDSEndpoint: "169.254.169.254/metadata"},
		"identity_endpoint must": {IdentityEndpoint: "localhost:1/msi", IdentityHeader: identityHdr},
	} {
		if _, err := entra.NewClient(entra.Config{ManagedIdentity: mi}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v, want it to say %q", err, want)
		}
	}
}
