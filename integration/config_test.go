package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadConfigIsRejectedAtLoad runs `caddy validate` (which provisions every
// module, as a real start does) on broken configs and checks the error codes
// (better-auth-client-credential's).
func TestBadConfigIsRejectedAtLoad(t *testing.T) {
	const site = `
:8080 {
	entra_token %s
	respond "unreachable"
}
`
	const entraBlock = `{
	entra {
		tenant_id  00000000-0000-4000-8000-000000000001
		client_id  11111111-0000-4000-8000-00000000c11e
		%s
		application orders-api {
			scope api://orders/.default
		}
	}
}
`
	tests := []struct {
		name      string
		caddyfile string
		want      []string
	}{
		{
			name:      "unknown application",
			caddyfile: strings.Replace(entraBlock, "%s", "client_secret s3cr3t-value", 1) + strings.Replace(site, "%s", "billing-api", 1),
			want:      []string{"MICROSOFT_APPLICATION_NOT_FOUND", "billing-api"},
		},
		{
			name:      "no entra app",
			caddyfile: strings.Replace(site, "%s", "orders-api", 1),
			want:      []string{"MICROSOFT_PROVIDER_NOT_CONFIGURED"},
		},
		{
			name:      "missing client secret",
			caddyfile: strings.Replace(entraBlock, "%s", "", 1) + strings.Replace(site, "%s", "orders-api", 1),
			want:      []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_secret"},
		},
		{
			name:      "secret from an unset environment variable",
			caddyfile: strings.Replace(entraBlock, "%s", "client_secret {env.ENTRA_TEST_UNSET_SECRET}", 1) + strings.Replace(site, "%s", "orders-api", 1),
			want:      []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_secret", "{env.ENTRA_TEST_UNSET_SECRET}"},
		},
		{
			name: "a header that cannot carry the token",
			caddyfile: strings.Replace(entraBlock, "%s", "client_secret s3cr3t-value", 1) +
				strings.Replace(site, "%s", "orders-api {\n\t\theader Proxy-Authorization\n\t}", 1),
			want: []string{"Proxy-Authorization", "cannot carry the token"},
		},
		{
			name: "redis without encryption_key",
			caddyfile: strings.Replace(entraBlock, "%s", "client_secret s3cr3t-value\n\t\tredis redis://127.0.0.1:1/0", 1) +
				strings.Replace(site, "%s", "orders-api", 1),
			want: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG: redis encryption_key: is required", "head -c 32 /dev/urandom | base64", "insecure_plaintext"},
		},
		{
			name: "redis with encryption_key and insecure_plaintext",
			caddyfile: strings.Replace(entraBlock, "%s", "client_secret s3cr3t-value\n\t\tredis redis://127.0.0.1:1/0 {\n\t\t\tencryption_key MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n\t\t\tinsecure_plaintext\n\t\t}", 1) +
				strings.Replace(site, "%s", "orders-api", 1),
			want: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG: redis insecure_plaintext", "cannot be combined"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			config := filepath.Join(dir, "Caddyfile")
			if err := os.WriteFile(config, []byte(tc.caddyfile), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(caddyBinary, "validate", "--config", config, "--adapter", "caddyfile")
			cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("caddy validate accepted the config:\n%s", out)
			}
			for _, want := range tc.want {
				if !strings.Contains(string(out), want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(string(out), "s3cr3t-value") {
				t.Error("the secret appears in the error output")
			}
		})
	}
}
