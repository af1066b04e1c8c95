package entra

import (
	"encoding/base64"
	"errors"
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

// Content no pattern of CheckFilePath catches (a base64 key, as Kubernetes
// Secret data holds it) given for a path is not quoted either: errors of
// reading a file name its kind, never its path.
func TestFileReadErrorsQuoteNoPath(t *testing.T) {
	secret := base64.StdEncoding.EncodeToString([]byte("-----BEGIN PRIVATE KEY-----\nMIIEsecretPrivateKeyBody\n"))
	_, err := NewClient(Config{TenantID: "t", ClientID: "00000000-0000-4000-8000-0000000000c1",
		ClientCertificate: &CertificateCredential{CertFile: secret}})
	var cfgErr *ConfigError
	if !errors.As(err, &cfgErr) || !strings.Contains(err.Error(), "reading certificate: the file does not exist") {
		t.Errorf("NewClient() = %v, want the certificate file refused as missing", err)
	}
	if _, err = readFederatedToken(secret, "federated_token_file"); !errors.Is(err, ErrFederatedTokenUnavailable) || !strings.Contains(err.Error(), "the file does not exist") {
		t.Errorf("readFederatedToken() = %v, want the file named missing", err)
	}
	for _, err := range []error{cfgErr, err} {
		if err != nil && strings.Contains(err.Error(), secret[:20]) {
			t.Errorf("the error quotes the value given for a path: %v", err)
		}
	}
}
