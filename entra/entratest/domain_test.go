package entratest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// A domain name of a tenant is answered as the tenant: its tokens carry
// the tenant's ID, its OpenID configuration names the tenant's ID, and
// each configuration request is counted.
func TestDomainNameOfATenant(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	if err := e.AddDomain("contoso.onmicrosoft.com", e.TenantID()); err != nil {
		t.Fatal(err)
	}
	if err := e.AddDomain("fabrikam.com", "not-served"); err == nil {
		t.Error("AddDomain accepted a tenant that is not served")
	}
	r := post(t, srv.URL+"/CONTOSO.onmicrosoft.com/oauth2/v2.0/token", validForm())
	if r.status != http.StatusOK {
		t.Fatalf("token by domain: status %d: %v", r.status, r.body)
	}
	claims, err := e.Verify(r.body["access_token"].(string))
	if err != nil || claims.TenantID != e.TenantID() || claims.Issuer != e.Issuer() {
		t.Errorf("token by domain: claims %+v, %v; want the tenant's tid and iss", claims, err)
	}

	resp, err := http.Get(srv.URL + "/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var document map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&document)
	resp.Body.Close()
	if issuer, _ := document["issuer"].(string); !strings.Contains(issuer, e.TenantID()) {
		t.Errorf("issuer %q does not name the tenant ID", issuer)
	}
	if endpoint, _ := document["token_endpoint"].(string); endpoint != srv.URL+e.TokenPath() {
		t.Errorf("token_endpoint %q, want %q", endpoint, srv.URL+e.TokenPath())
	}
	if resp, err := http.Get(srv.URL + "/unknown.example/v2.0/.well-known/openid-configuration"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown domain: %v %v, want 400", resp.StatusCode, err)
	}
	if n := e.DiscoveryRequests(); n != 2 {
		t.Errorf("DiscoveryRequests = %d, want 2", n)
	}
}
