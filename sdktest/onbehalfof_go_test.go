package sdktest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// oboCaddyfile is a replica whose /graph route exchanges the caller's user
// token on the user's behalf (no Redis: one replica).
const oboCaddyfile = `{
	admin 127.0.0.1:%[2]d
	entra {
		authority_host {env.TEST_AUTHORITY_HOST}
		tenant_id      {env.TEST_TENANT_ID}
		client_id      {env.TEST_CLIENT_ID}
		client_secret  {env.TEST_CLIENT_SECRET}
		application graph-as-user {
			scope https://graph.microsoft.com/User.Read
			on_behalf_of
		}
	}
}

:%[1]d {
	bind 127.0.0.1
	handle_path /graph/* {
		entra_token graph-as-user
		reverse_proxy {$TEST_UPSTREAM}
	}
	respond 404
}
`

// frontEndCredential stands for the front end's MSAL: it holds the signed-in
// user's token for the middle tier, and gets a new one when asked for
// claims (the user stepped up: here, the emulator's challenge ends).
type frontEndCredential struct {
	t        *testing.T
	emulator *entratest.Emulator
	oid      string

	mu       sync.Mutex
	requests []policy.TokenRequestOptions
}

func (c *frontEndCredential) GetToken(_ context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	c.requests = append(c.requests, opts)
	c.mu.Unlock()
	if opts.Claims != "" {
		c.emulator.ChallengeUser(c.oid, "") // the user satisfied the challenge
	}
	token, err := c.emulator.IssueUserToken(entratest.UserToken{ObjectID: c.oid, Audience: "api://" + testClientID})
	if err != nil {
		return azcore.AccessToken{}, err
	}
	return azcore.AccessToken{Token: token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// TestGoSDKBearerTokenPolicyAnswersTheSidecarsClaimsChallenge: azcore's
// BearerTokenPolicy, which handles claims challenges for the Go Azure SDK,
// reads the challenge the sidecar answers when Entra requires the user to
// step up, asks its credential for a token with those claims, and retries:
// the retry reaches downstream with the user's exchanged token.
func TestGoSDKBearerTokenPolicyAnswersTheSidecarsClaimsChallenge(t *testing.T) {
	f := newFleet(t)
	const oid = "0d0d0d0d-0000-4000-8000-00000000000d"
	const claims = `{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`
	f.emulator.ChallengeUser(oid, claims)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, err := f.emulator.Verify(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if err != nil {
			http.Error(w, "no valid token", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, got.ObjectID)
	}))
	t.Cleanup(upstream.Close)
	replica := startReplicaWith(t, oboCaddyfile, []string{
		"TEST_AUTHORITY_HOST=" + f.issuer,
		"TEST_TENANT_ID=" + f.emulator.TenantID(),
		"TEST_CLIENT_ID=" + testClientID,
		"TEST_CLIENT_SECRET=" + testClientSecret,
		"TEST_UPSTREAM=" + upstream.URL,
	})

	cred := &frontEndCredential{t: t, emulator: f.emulator, oid: oid}
	pipeline := runtime.NewPipeline("sdktest", "v0", runtime.PipelineOptions{
		PerRetry: []policy.Policy{runtime.NewBearerTokenPolicy(cred, []string{"api://" + testClientID + "/access_as_user"},
			&policy.BearerTokenOptions{InsecureAllowCredentialWithHTTP: true})},
	}, nil)
	req, err := runtime.NewRequest(context.Background(), http.MethodGet, replica.URL+"/graph/v1.0/me")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := pipeline.Do(req)
	if err != nil {
		t.Fatalf("the pipeline failed: %v\nlogs:\n%s", err, replica.proc.Output.String())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != oid {
		t.Fatalf("after the challenge: %d %q, want 200 with the user's downstream token", resp.StatusCode, body)
	}
	cred.mu.Lock()
	defer cred.mu.Unlock()
	if len(cred.requests) != 2 || cred.requests[0].Claims != "" || cred.requests[1].Claims != claims || !cred.requests[1].EnableCAE {
		t.Fatalf("the credential was asked %+v, want a token, then one with the challenge's claims %s", cred.requests, claims)
	}
	if n := f.emulator.OnBehalfOfRequests(); n != 2 {
		t.Errorf("%d exchanges, want 2 (the challenged token, then the stepped-up one)", n)
	}
	assertNoSecrets(t, replica.proc.Output.String())
}
