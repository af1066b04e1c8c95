package integration

import (
	"strings"
	"testing"
	"time"
)

// TestLoadWarnsOfCertificateBoundTokensWithoutTheCertificate: for an
// application authenticating with mutual TLS, the load warns about the
// route whose reverse_proxy presents no client certificate (a server
// binding its tokens to the certificate would have them refused
// upstream), and not about the route whose transport presents it.
func TestLoadWarnsOfCertificateBoundTokensWithoutTheCertificate(t *testing.T) {
	cert := newClientCertificate(t, t.TempDir(), "mtls-sidecar")
	config := `{
	admin 127.0.0.1:%[2]d
	entra {
		token_endpoint https://127.0.0.1:9/token
		client_id      orders-sidecar
		client_certificate {env.TEST_CERT} {env.TEST_KEY}
		client_auth    tls_client_auth
		application bound api://bound/.default
	}
}

:%[1]d {
	bind 127.0.0.1
	handle_path /without/* {
		entra_token bound
		reverse_proxy https://127.0.0.1:9
	}
	handle_path /with/* {
		entra_token bound
		reverse_proxy https://127.0.0.1:9 {
			transport http {
				tls_client_auth {$TEST_CERT} {$TEST_KEY}
			}
		}
	}
}
`
	replica := startSidecar(t, config, "TEST_CERT="+cert.CertFile, "TEST_KEY="+cert.KeyFile)
	waitFor(t, "the load's warnings", 5*time.Second, func() error {
		if !strings.Contains(replica.logs(), "server running") {
			return errString("not yet")
		}
		return nil
	})
	if n := strings.Count(replica.logs(), "presents no client certificate"); n != 1 {
		t.Errorf("%d warnings about a reverse_proxy without the certificate, want 1 (the /without route):\n%s", n, replica.logs())
	}
}
