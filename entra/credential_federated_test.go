package entra_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

const (
	federatedIssuer  = "https://oidc.prod-aks.example/tenant/cluster/"
	federatedSubject = "system:serviceaccount:payments:sidecar"
)

func TestFederatedTokenFileRotation(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	emu, srv, err := entratest.NewServer(entratest.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	emu.AddFederatedClient(testClientID, federatedIssuer, federatedSubject)

	dir := t.TempDir()
	first, err := emu.IssueFederatedToken(federatedIssuer, federatedSubject, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := writeFile(t, dir, "azure-identity-token", []byte(first+"\n"))
	recorder := &formRecorder{}
	client, err := entra.NewClient(entra.Config{
		TenantID:           emu.TenantID(),
		ClientID:           testClientID,
		FederatedTokenFile: tokenFile,
		AuthorityHost:      srv.URL,
		HTTPClient:         &http.Client{Transport: recorder},
	})
	if err != nil {
		t.Fatal(err)
	}
	if client.CredentialType() != "federated_token" {
		t.Errorf("CredentialType() = %q", client.CredentialType())
	}
	get := func() error {
		_, err := client.Token(context.Background(), []string{graphScope})
		return err
	}
	if err := get(); err != nil {
		t.Fatalf("first token: %v", err)
	}

	// The kubelet rotates the token; the first one then expires.
	clock.Advance(50 * time.Minute)
	second, err := emu.IssueFederatedToken(federatedIssuer, federatedSubject, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "azure-identity-token", []byte(second))
	clock.Advance(20 * time.Minute)
	if err := get(); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	forms := recorder.Forms()
	if forms[0].Get("client_assertion") != first || forms[1].Get("client_assertion") != second {
		t.Error("the assertions sent are not the file's content at each request")
	}
	for _, form := range forms {
		if form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || form.Has("client_secret") {
			t.Errorf("form = %v", form)
		}
	}

	// An expired token in the file: Entra's error, permanent.
	writeFile(t, dir, "azure-identity-token", []byte(first))
	err = get()
	reqErr := requestError(t, err)
	if reqErr.StatusCode != 400 || reqErr.Code != "invalid_client" || len(reqErr.ErrorCodes) != 1 || reqErr.ErrorCodes[0] != 700024 {
		t.Errorf("expired federated token: %v", err)
	}
	if !reqErr.PermanentFailure() {
		t.Error("expired assertion is not a permanent failure")
	}
	assertNoLeak(t, err.Error(), first, second)

	// An empty or missing file: transient, and no request is sent.
	requests := emu.TokenRequests()
	writeFile(t, dir, "azure-identity-token", []byte(" \n"))
	for _, name := range []string{"empty", "missing"} {
		if name == "missing" {
			client, err = entra.NewClient(entra.Config{TenantID: emu.TenantID(), ClientID: testClientID, FederatedTokenFile: dir + "/nope", AuthorityHost: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
		}
		err := get()
		reqErr := requestError(t, err)
		if !errors.Is(err, entra.ErrFederatedTokenUnavailable) || reqErr.PermanentFailure() {
			t.Errorf("%s file: %v (permanent %v)", name, err, reqErr.PermanentFailure())
		}
		if reqErr.Summary() != "federated token file unavailable" {
			t.Errorf("%s file: Summary() = %q", name, reqErr.Summary())
		}
	}
	if emu.TokenRequests() != requests {
		t.Error("a request was sent without a federated token")
	}
}

func TestWorkloadIdentityFromEnv(t *testing.T) {
	full := map[string]string{
		"AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
		"AZURE_CLIENT_ID":            testClientID,
		"AZURE_TENANT_ID":            "72f988bf-86f1-41af-91ab-2d7cd011db47",
		"AZURE_AUTHORITY_HOST":       "https://login.microsoftonline.us/",
	}
	getenv := func(env map[string]string) func(string) string {
		return func(name string) string { return env[name] }
	}
	cfg, err := entra.WorkloadIdentityFromEnv(getenv(full))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FederatedTokenFile != full["AZURE_FEDERATED_TOKEN_FILE"] || cfg.ClientID != testClientID ||
		cfg.TenantID != full["AZURE_TENANT_ID"] || cfg.AuthorityHost != full["AZURE_AUTHORITY_HOST"] {
		t.Errorf("Config = %+v", cfg)
	}
	client, err := entra.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://login.microsoftonline.us/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"; client.TokenEndpoint() != want {
		t.Errorf("TokenEndpoint() = %q, want %q", client.TokenEndpoint(), want)
	}

	for _, name := range []string{"AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"} {
		env := map[string]string{}
		for k, v := range full {
			if k != name {
				env[k] = v
			}
		}
		_, err := entra.WorkloadIdentityFromEnv(getenv(env))
		var cfgErr *entra.ConfigError
		if !errors.As(err, &cfgErr) || cfgErr.Field != "workload_identity" || cfgErr.Reason != name+" is not set" {
			t.Errorf("without %s: %v", name, err)
		}
	}
	delete(full, "AZURE_AUTHORITY_HOST")
	if cfg, err := entra.WorkloadIdentityFromEnv(getenv(full)); err != nil || cfg.AuthorityHost != "" {
		t.Errorf("without AZURE_AUTHORITY_HOST: %+v, %v", cfg, err)
	}
}

// Errors about the federated token file name where its path came from:
// AZURE_FEDERATED_TOKEN_FILE for a workload identity (the AKS webhook sets
// it; the config has no federated_token_file to fix), federated_token_file
// otherwise; never the path or its content.
func TestFederatedTokenFileErrorsNameWhereThePathCameFrom(t *testing.T) {
	const content = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
	missing := filepath.Join(t.TempDir(), "azure-identity-token-missing")
	fromEnv := func(path string) entra.Config {
		cfg, err := entra.WorkloadIdentityFromEnv(func(name string) string {
			return map[string]string{"AZURE_FEDERATED_TOKEN_FILE": path, "AZURE_CLIENT_ID": testClientID,
				"AZURE_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47"}[name]
		})
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	fromConfig := func(path string) entra.Config {
		return entra.Config{TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47", ClientID: testClientID, FederatedTokenFile: path}
	}
	for _, tc := range []struct {
		source          string
		config          func(path string) entra.Config
		loadField, name string // the load error's field; the name every error gives
		notName         string
	}{
		{"environment", fromEnv, "workload_identity", "AZURE_FEDERATED_TOKEN_FILE", "federated_token_file"},
		{"config", fromConfig, "federated_token_file", "federated_token_file", "AZURE_FEDERATED_TOKEN_FILE"},
	} {
		_, err := entra.NewClient(tc.config(content))
		var cfgErr *entra.ConfigError
		if !errors.As(err, &cfgErr) || cfgErr.Field != tc.loadField || !strings.Contains(err.Error(), tc.name) ||
			strings.Contains(err.Error(), tc.notName) || strings.Contains(err.Error(), content[:20]) {
			t.Errorf("%s, content for a path: NewClient() = %v, want a %s error naming %s, not %s or the content",
				tc.source, err, tc.loadField, tc.name, tc.notName)
		}

		client, err := entra.NewClient(tc.config(missing))
		if err != nil {
			t.Fatalf("%s: NewClient() = %v", tc.source, err)
		}
		_, err = client.Token(context.Background(), []string{"api://orders/.default"})
		if !errors.Is(err, entra.ErrFederatedTokenUnavailable) || !strings.Contains(err.Error(), tc.name+": the file does not exist") ||
			strings.Contains(err.Error(), tc.notName) || strings.Contains(err.Error(), missing) {
			t.Errorf("%s, missing file: Token() = %v, want %q, not %s or the path", tc.source, err, tc.name+": the file does not exist", tc.notName)
		}
	}
}
