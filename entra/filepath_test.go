package entra

import (
	"strings"
	"testing"
)

func TestCheckFilePathRefusesWhatAFileHolds(t *testing.T) {
	for _, path := range []string{"/var/run/secrets/azure/tokens/azure-identity-token", "certs/client.pem",
		`C:\certs\client.pfx`, "/etc/ssl/eyJ.a.b/key.pem", "token.jwt"} {
		if err := CheckFilePath("client_certificate", path); err != nil {
			t.Errorf("CheckFilePath(%q) = %v, want nil", path, err)
		}
	}
	for name, content := range map[string]string{
		"PEM":       "-----BEGIN PRIVATE KEY-----MIIEsecret-----END PRIVATE KEY-----",
		"two lines": "/etc/a\nsecret",
		"JWT":       "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
		"too long":  "/" + strings.Repeat("a", 4096),
	} {
		err := CheckFilePath("federated_token_file", content)
		if err == nil {
			t.Errorf("%s: CheckFilePath accepted it", name)
			continue
		}
		if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "eyJ") || strings.Contains(err.Error(), "aaaa") {
			t.Errorf("%s: the error quotes the value: %v", name, err)
		}
	}
}
