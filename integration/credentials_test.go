package integration

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// newEmulator starts an Entra emulator on loopback for one test.
func newEmulator(t *testing.T) (*entratest.Emulator, string) {
	t.Helper()
	emulator, server, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	return emulator, server.URL
}

// tokenVia sends one request through a replica and returns the token that
// reached the upstream, failing the test on any other outcome.
func tokenVia(t *testing.T, s *sidecar, u *upstream, path string) string {
	t.Helper()
	before := len(u.requests())
	status, body := get(t, s.URL+path, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d, body %s\nlogs:\n%s", path, status, body, s.logs())
	}
	seen := u.requests()
	if len(seen) != before+1 {
		t.Fatalf("upstream got %d new requests, want 1", len(seen)-before)
	}
	return bearer(t, seen[len(seen)-1])
}

func TestCertificateCredentialAndRotation(t *testing.T) {
	emulator, authority := newEmulator(t)
	up := newUpstream(t)
	dir := t.TempDir()
	first := newClientCertificate(t, dir, "sidecar-cert-1")
	emulator.AddCertificateClient(testClientID, first.Cert)

	config := sidecarConfig(`
		authority_host {env.TEST_AUTHORITY_HOST}
		tenant_id      {env.TEST_TENANT_ID}
		client_id      {env.TEST_CLIENT_ID}
		client_certificate {env.TEST_CERT} {env.TEST_KEY}
		application orders-api api://orders/.default
		application graph-api https://graph.microsoft.com/.default`,
		route{Path: "/orders", Application: "orders-api"},
		route{Path: "/graph", Application: "graph-api"})
	replica := startSidecar(t, config,
		"TEST_AUTHORITY_HOST="+authority, "TEST_TENANT_ID="+emulator.TenantID(), "TEST_CLIENT_ID="+testClientID,
		"TEST_CERT="+first.CertFile, "TEST_KEY="+first.KeyFile, "TEST_UPSTREAM="+up.server.URL)

	token := tokenVia(t, replica, up, "/orders/a")
	claims, err := emulator.Verify(token)
	if err != nil || claims.AppID != testClientID {
		t.Fatalf("token from a certificate credential: claims %+v, err %v", claims, err)
	}

	// Rotate: new files in place, and Entra now knows only the new
	// certificate. The next token request must be signed with the new key,
	// without a restart.
	second := newClientCertificate(t, dir, "sidecar-cert-2")
	if second.CertFile != first.CertFile {
		t.Fatal("rotation must reuse the same paths")
	}
	emulator.AddCertificateClient(testClientID, second.Cert)
	requestsBefore := emulator.TokenRequests()
	token = tokenVia(t, replica, up, "/graph/b")
	if _, err := emulator.Verify(token); err != nil {
		t.Fatalf("token after rotation: %v", err)
	}
	if got := emulator.TokenRequests() - requestsBefore; got != 1 {
		t.Errorf("token requests after rotation = %d, want 1 (accepted with the new certificate)", got)
	}
	assertNoSecretsIn(t, replica.logs(), token, pemBody(t, first.KeyFile), pemBody(t, second.KeyFile))
}

func TestFederatedTokenFileIsReadForEveryRequest(t *testing.T) {
	emulator, authority := newEmulator(t)
	up := newUpstream(t)
	const issuer, subject = "https://oidc.cluster.local", "system:serviceaccount:orders:legacy-app"
	emulator.AddFederatedClient(testClientID, issuer, subject)
	tokenFile := filepath.Join(t.TempDir(), "azure-identity-token")
	assertion, err := emulator.IssueFederatedToken(issuer, subject, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomically(t, tokenFile, []byte(assertion))

	// workload_identity takes everything from the environment, as on AKS.
	config := sidecarConfig(`
		workload_identity
		application a1 api://one/.default
		application a2 api://two/.default
		application a3 api://three/.default`,
		route{Path: "/one", Application: "a1"},
		route{Path: "/two", Application: "a2"},
		route{Path: "/three", Application: "a3"})
	replica := startSidecar(t, config,
		"AZURE_AUTHORITY_HOST="+authority, "AZURE_TENANT_ID="+emulator.TenantID(), "AZURE_CLIENT_ID="+testClientID,
		"AZURE_FEDERATED_TOKEN_FILE="+tokenFile, "TEST_UPSTREAM="+up.server.URL)

	tokenVia(t, replica, up, "/one/x")

	// The kubelet rotates the file; a broken rotation is seen at once...
	writeAtomically(t, tokenFile, []byte("not-a-jwt"))
	status, body := get(t, replica.URL+"/two/x", nil)
	if status != http.StatusBadGateway || !strings.Contains(body, "MICROSOFT_TOKEN_REQUEST_FAILED") {
		t.Fatalf("with a bad federated token: status %d body %s, want 502", status, body)
	}
	// ...and so is a good one, without a restart.
	rotated, err := emulator.IssueFederatedToken(issuer, subject, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomically(t, tokenFile, []byte(rotated))
	token := tokenVia(t, replica, up, "/three/x")
	if claims, err := emulator.Verify(token); err != nil || claims.Audience != "api://three" {
		t.Fatalf("token after rotation: %+v, %v", claims, err)
	}
	assertNoSecretsIn(t, replica.logs(), token, assertion, rotated)
}

func TestManagedIdentityBothProtocols(t *testing.T) {
	emulator, authority := newEmulator(t)
	up := newUpstream(t)
	const systemID, userID = "44444444-0000-4000-8000-00000000005a", "55555555-0000-4000-8000-0000000000ua"
	emulator.AddManagedIdentity(systemID, true)
	user := emulator.AddManagedIdentity(userID, false)
	const identityHeader = "app-service-identity-header-value"
	emulator.SetIdentityHeader(identityHeader)

	config := sidecarConfig(`
		application vault https://vault.azure.net/.default {
			managed_identity {
				endpoint {env.TEST_IMDS}
			}
		}
		application storage https://storage.azure.com/.default {
			managed_identity {env.TEST_USER_MI} {
				endpoint {env.TEST_IMDS}
			}
		}
		application keys api://keys/.default {
			managed_identity {
				object_id {env.TEST_USER_MI_OBJECT}
				endpoint  {env.TEST_IMDS}
			}
		}
		application blobs api://blobs/.default {
			managed_identity {
				resource_id {env.TEST_USER_MI_RESOURCE}
				endpoint    {env.TEST_IMDS}
			}
		}`,
		route{Path: "/vault", Application: "vault"},
		route{Path: "/storage", Application: "storage"},
		route{Path: "/keys", Application: "keys"},
		route{Path: "/blobs", Application: "blobs"})
	env := []string{"TEST_IMDS=" + authority + "/metadata/identity/oauth2/token", "TEST_USER_MI=" + userID,
		"TEST_USER_MI_OBJECT=" + user.ObjectID, "TEST_USER_MI_RESOURCE=" + user.ResourceID, "TEST_UPSTREAM=" + up.server.URL}

	everyIdentity := func(t *testing.T, replica *sidecar) {
		t.Helper()
		for path, want := range map[string][2]string{
			"/vault/s": {"https://vault.azure.net", systemID}, "/storage/b": {"https://storage.azure.com", userID},
			"/keys/k": {"api://keys", userID}, "/blobs/b": {"api://blobs", userID}, // by object ID, by resource ID
		} {
			claims, err := emulator.Verify(tokenVia(t, replica, up, path))
			if err != nil || claims.Audience != want[0] || claims.AppID != want[1] {
				t.Errorf("%s: aud %q appid %q (err %v), want %q %q", path, claims.Audience, claims.AppID, err, want[0], want[1])
			}
		}
	}
	t.Run("imds", func(t *testing.T) {
		everyIdentity(t, startSidecar(t, config, env...))
	})
	t.Run("app service", func(t *testing.T) {
		// IDENTITY_ENDPOINT and IDENTITY_HEADER switch to the App Service /
		// Container Apps protocol, as on those platforms, where no
		// endpoint is configured (a configured one is IMDS's, which
		// answers nothing here: 169.254.169.254 is not this machine's).
		withoutEndpoints := regexp.MustCompile(`(?m)^\s*endpoint .*\n`).ReplaceAllString(config, "")
		if strings.Contains(withoutEndpoints, "TEST_IMDS") {
			t.Fatal("an endpoint line was left")
		}
		replica := startSidecar(t, withoutEndpoints, append(env,
			"IDENTITY_ENDPOINT="+authority+"/msi/token", "IDENTITY_HEADER="+identityHeader)...)
		everyIdentity(t, replica)
		assertNoSecretsIn(t, replica.logs(), identityHeader)
	})
}

func TestTwoIdentitiesInOneConfigNeverShareATokenInRedis(t *testing.T) {
	f := newFleet(t)
	const otherClient, otherSecret = "66666666-0000-4000-8000-0000000000b2", "second-registration-secret-9c1e"
	f.emulator.AddClient(otherClient, otherSecret)
	config := sidecarConfig(`
		authority_host {env.TEST_AUTHORITY_HOST}
		tenant_id      {env.TEST_TENANT_ID}
		client_id      {env.TEST_CLIENT_ID}
		client_secret  {env.TEST_CLIENT_SECRET}
		redis {env.TEST_REDIS_URL} {
			key_prefix `+testKeyPrefix+`
			insecure_plaintext
		}
		application orders-api api://orders/.default
		application orders-as-other api://orders/.default {
			client_id     {env.TEST_OTHER_CLIENT}
			client_secret {env.TEST_OTHER_SECRET}
		}`,
		route{Path: "/a", Application: "orders-api"},
		route{Path: "/b", Application: "orders-as-other"})
	replica := startSidecar(t, config, append(f.env(testClientSecret),
		"TEST_OTHER_CLIENT="+otherClient, "TEST_OTHER_SECRET="+otherSecret)...)

	first, err := f.emulator.Verify(tokenVia(t, replica, f.upstream, "/a/x"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.emulator.Verify(tokenVia(t, replica, f.upstream, "/b/x"))
	if err != nil {
		t.Fatal(err)
	}
	if first.AppID != testClientID || second.AppID != otherClient {
		t.Errorf("appids %q and %q, want %q and %q: same scope, different identities", first.AppID, second.AppID, testClientID, otherClient)
	}
	if n := len(f.records(t)); n != 2 {
		t.Errorf("redis holds %d records, want 2 (one per identity)", n)
	}
	assertNoSecretsIn(t, replica.logs(), otherSecret, testClientSecret)
}

// assertNoSecretsIn fails when logs hold any of the secrets.
func assertNoSecretsIn(t *testing.T, logs string, secrets ...string) {
	t.Helper()
	for i, secret := range secrets {
		if secret != "" && strings.Contains(logs, secret) {
			t.Errorf("secret #%d appears in the sidecar logs", i+1)
		}
	}
}

// pemBody returns the base64 body of a PEM file's first block, to look for
// a leaked key in logs.
func pemBody(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) < 3 {
		t.Fatalf("%s is not PEM", path)
	}
	return lines[1]
}
