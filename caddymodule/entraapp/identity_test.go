package entraapp

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// A workload identity's token file path comes from
// AZURE_FEDERATED_TOKEN_FILE (the AKS webhook sets it): an error about it
// names the variable and workload_identity, not federated_token_file, which
// the config does not hold; never the value.
func TestWorkloadIdentityErrorsNameTheVariable(t *testing.T) {
	const content = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", content)
	t.Setenv("AZURE_CLIENT_ID", "00000000-0000-4000-8000-0000000000c1")
	t.Setenv("AZURE_TENANT_ID", "00000000-0000-4000-8000-000000000001")
	for _, tc := range []struct {
		name string
		app  *App
		want string
	}{
		{"default identity", &App{IdentityConfig: IdentityConfig{WorkloadIdentity: true},
			Applications: map[string]*Application{"orders-api": {Scopes: []string{"api://orders/.default"}}}},
			CodeProviderInvalidConfig + ": workload_identity: AZURE_FEDERATED_TOKEN_FILE holds"},
		{"an application's own", &App{IdentityConfig: IdentityConfig{TenantID: "t", ClientID: "00000000-0000-4000-8000-0000000000c1", ClientSecret: "s"},
			Applications: map[string]*Application{"orders-api": {Scopes: []string{"api://orders/.default"},
				IdentityConfig: IdentityConfig{WorkloadIdentity: true}}}},
			CodeProviderInvalidConfig + ": application orders-api: workload_identity: AZURE_FEDERATED_TOKEN_FILE holds"},
	} {
		_, err := tc.app.resolveSettings(caddy.NewReplacer())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want %q", tc.name, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "federated_token_file") || strings.Contains(err.Error(), content[:20])) {
			t.Errorf("%s: the error names federated_token_file or quotes the value: %v", tc.name, err)
		}
	}
}
