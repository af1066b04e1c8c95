package entra_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// awkwardSecrets hold what form encoding changes ('+', '%', ':', '=',
// spaces, non-ASCII) and what naive Basic encodings break on.
var awkwardSecrets = map[string]string{
	"plus":      "a+b+c~Zx8Q",
	"percent":   "100%25%-sure%",
	"colon":     "user:pass:word",
	"equals":    "base64ish==",
	"spaces":    " leading and trailing ",
	"nonASCII":  "clé-секрет-秘密-🔑",
	"all":       "+%:= é&?/#",
	"reserved":  "a&b=c;d,e",
	"plusSpace": "+ +",
}

// requestRecorder records each token request's Authorization header and
// form body before passing it on.
type requestRecorder struct {
	mu       sync.Mutex
	requests []recordedRequest
}

type recordedRequest struct {
	authorization string
	form          url.Values
}

func (rr *requestRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	form, _ := url.ParseQuery(string(body))
	rr.mu.Lock()
	rr.requests = append(rr.requests, recordedRequest{req.Header.Get("Authorization"), form})
	rr.mu.Unlock()
	req.Body = io.NopCloser(strings.NewReader(string(body)))
	return http.DefaultTransport.RoundTrip(req)
}

func (rr *requestRecorder) last(t *testing.T) recordedRequest {
	t.Helper()
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if len(rr.requests) == 0 {
		t.Fatal("no request was sent")
	}
	return rr.requests[len(rr.requests)-1]
}

// basicClient returns a client of clientID and secret with client_auth
// basic against the emulator at authority, and the recorder of its
// requests. Its token endpoint is given, so that clientID need not be a
// GUID (another OAuth 2.0 server's may be anything).
func basicClient(t *testing.T, authority, tenantID, clientID, secret string) (*entra.Client, *requestRecorder) {
	t.Helper()
	recorder := new(requestRecorder)
	client, err := entra.NewClient(entra.Config{
		TokenEndpoint: authority + "/" + tenantID + "/oauth2/v2.0/token",
		ClientID:      clientID, ClientSecret: secret, ClientAuth: entra.ClientAuthBasic,
		HTTPClient: &http.Client{Transport: recorder},
	})
	if err != nil {
		t.Fatal(err)
	}
	return client, recorder
}

// With client_auth basic, every awkward secret reaches the emulator, which
// decodes Basic as RFC 6749 section 2.3.1 says, and the request carries
// exactly base64(urlencode(id) ":" urlencode(secret)) and no client_secret.
func TestClientSecretBasicAwkwardSecrets(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	for name, secret := range awkwardSecrets {
		t.Run(name, func(t *testing.T) {
			clientID := "client-" + name + ":+%é"
			emu.AddClient(clientID, secret)
			client, recorder := basicClient(t, srv.URL, emu.TenantID(), clientID, secret)
			token, err := client.Token(context.Background(), []string{graphScope})
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			claims, err := emu.Verify(token.AccessToken)
			if err != nil || claims.AppID != clientID {
				t.Fatalf("token claims %+v, %v; want appid %q", claims, err, clientID)
			}
			sent := recorder.last(t)
			want := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(clientID)+":"+url.QueryEscape(secret)))
			if sent.authorization != want {
				t.Errorf("Authorization = %q, want %q", sent.authorization, want)
			}
			if sent.form.Has("client_secret") || sent.form.Has("client_assertion") {
				t.Errorf("the body carries a credential too: %v", sortedKeys(sent.form))
			}
		})
	}
	if n := emu.BasicAuthentications(); n != int64(len(awkwardSecrets)) {
		t.Errorf("BasicAuthentications = %d, want %d", n, len(awkwardSecrets))
	}
}

// The encoding is form encoding, byte for byte: a space is '+', '+' is
// %2B, ':' is %3A, non-ASCII is its UTF-8 bytes escaped.
func TestClientSecretBasicEncoding(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	emu.AddClient("my:app+1", "a b+c:d=é%")
	client, recorder := basicClient(t, srv.URL, emu.TenantID(), "my:app+1", "a b+c:d=é%")
	if _, err := client.Token(context.Background(), []string{graphScope}); err != nil {
		t.Fatal(err)
	}
	encoded, ok := strings.CutPrefix(recorder.last(t).authorization, "Basic ")
	decoded, err := base64.StdEncoding.DecodeString(encoded)
	if !ok || err != nil {
		t.Fatalf("Authorization is not Basic: %v", err)
	}
	if got, want := string(decoded), "my%3Aapp%2B1:a+b%2Bc%3Ad%3D%C3%A9%25"; got != want {
		t.Errorf("decoded Basic credentials = %q, want %q", got, want)
	}
}

// A wrong secret sent with Basic is refused as Entra refuses one, and the
// error carries neither the secret nor its Basic encoding.
func TestClientSecretBasicWrongSecret(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	emu.AddClient(testClientID, "the right one")
	const wrong = "wrong+secret: é"
	client, recorder := basicClient(t, srv.URL, emu.TenantID(), testClientID, wrong)
	_, err = client.Token(context.Background(), []string{graphScope})
	reqErr := requestError(t, err)
	if reqErr.StatusCode != http.StatusUnauthorized || len(reqErr.ErrorCodes) != 1 || reqErr.ErrorCodes[0] != 7000215 {
		t.Errorf("status %d, codes %v; want 401 [7000215]", reqErr.StatusCode, reqErr.ErrorCodes)
	}
	assertNoLeak(t, err.Error(), wrong, url.QueryEscape(wrong), strings.TrimPrefix(recorder.last(t).authorization, "Basic "))
}

// The on-behalf-of exchange presents the secret with Basic too.
func TestClientSecretBasicOnBehalfOf(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	secret := awkwardSecrets["all"]
	emu.AddClient(testClientID, secret)
	client, recorder := basicClient(t, srv.URL, emu.TenantID(), testClientID, secret)
	user, err := entra.ReadUserAssertion(issueUserToken(t, emu, entratest.UserToken{}), time.Now(),
		entra.UserTokenRules{TenantID: emu.TenantID(), ClientID: testClientID})
	if err != nil {
		t.Fatal(err)
	}
	token, err := client.OnBehalfOf(context.Background(), user, userScopes)
	if err != nil {
		t.Fatalf("OnBehalfOf: %v", err)
	}
	if claims, err := emu.Verify(token.AccessToken); err != nil || claims.ObjectID != userOID {
		t.Errorf("downstream claims %+v, %v", claims, err)
	}
	sent := recorder.last(t)
	if !strings.HasPrefix(sent.authorization, "Basic ") || sent.form.Has("client_secret") || sent.form.Get("requested_token_use") != "on_behalf_of" {
		t.Errorf("the exchange did not use Basic alone: Authorization set %v, body fields %v", sent.authorization != "", sortedKeys(sent.form))
	}
	if emu.BasicAuthentications() != 1 || emu.OnBehalfOfRequests() != 1 {
		t.Errorf("BasicAuthentications, OnBehalfOfRequests = %d, %d; want 1, 1", emu.BasicAuthentications(), emu.OnBehalfOfRequests())
	}
}

// client_auth is checked when the client is made: an unknown value, and
// basic without a client secret, are refused naming the field.
func TestClientAuthConfig(t *testing.T) {
	mi := &entra.ManagedIdentityCredential{ClientID: "11111111-0000-4000-8000-000000000000"}
	for _, tt := range []struct {
		name   string
		cfg    entra.Config
		reason string
	}{
		{"unknown", entra.Config{ClientSecret: testSecret, ClientAuth: "Basic"}, "must be post, basic, tls_client_auth or self_signed_tls_client_auth"},
		{"basic with a federated token", entra.Config{FederatedTokenFile: "/token", ClientAuth: "basic"}, "needs client_secret"},
		{"basic with a managed identity", entra.Config{ManagedIdentity: mi, ClientAuth: "basic"}, "needs client_secret"},
		{"post", entra.Config{ClientSecret: testSecret, ClientAuth: "post"}, ""},
		{"basic", entra.Config{ClientSecret: testSecret, ClientAuth: "basic"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.TenantID, tt.cfg.ClientID = "contoso.onmicrosoft.com", testClientID
			_, err := entra.NewClient(tt.cfg)
			var cfgErr *entra.ConfigError
			switch {
			case tt.reason == "" && err != nil:
				t.Fatalf("NewClient: %v", err)
			case tt.reason == "":
			case !errors.As(err, &cfgErr) || cfgErr.Field != "client_auth" || !strings.Contains(cfgErr.Reason, tt.reason):
				t.Fatalf("error = %v; want client_auth: ...%s", err, tt.reason)
			}
			if err != nil {
				assertNoLeak(t, err.Error(), testSecret)
			}
		})
	}
}

func sortedKeys(form url.Values) []string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	return keys
}
