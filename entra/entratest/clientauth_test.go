package entratest

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// postBasic posts form with the given Authorization header.
func postBasic(t *testing.T, target, authorization string, form url.Values) response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", authorization)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return response{resp.StatusCode, resp.Header, body}
}

func basic(raw string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(raw)) }

// The emulator decodes client_secret_basic as RFC 6749 section 2.3.1 says
// (base64, then each part form-unescaped), and refuses a request that
// presents the secret twice, a body client_id that is not Basic's, and a
// header that does not decode.
func TestClientSecretBasicDecoding(t *testing.T) {
	const awkwardID, awkwardSecret = "app:1+x", "a b+c:%=é"
	e, srv := startEmulator(t, Options{})
	e.AddClient(awkwardID, awkwardSecret)
	e.AddClient("plus-app", "a+b")
	noCredential := validForm()
	noCredential.Del("client_id")
	noCredential.Del("client_secret")
	withID := validForm()
	withID.Del("client_secret")
	encoded := url.QueryEscape(awkwardID) + ":" + url.QueryEscape(awkwardSecret)
	for _, tt := range []struct {
		name          string
		authorization string
		form          url.Values
		status        int
		aadsts        int
	}{
		{"form-encoded parts", basic(encoded), noCredential, 200, 0},
		{"lower-case scheme", "basic " + base64.StdEncoding.EncodeToString([]byte(encoded)), noCredential, 200, 0},
		{"body client_id of the same client", basic(url.QueryEscape(clientID) + ":" + url.QueryEscape(secret)), withID, 200, 0},
		// Unencoded, '+' reads as a space: the wrong secret.
		{"parts not form-encoded", basic("plus-app:a+b"), noCredential, 401, 7000215},
		{"parts form-encoded", basic("plus-app:a%2Bb"), noCredential, 200, 0},
		{"Basic and client_secret", basic(encoded), func() url.Values { f := validForm(); f.Del("client_id"); return f }(), 400, 90023},
		{"Basic and client_assertion", basic(encoded), func() url.Values {
			f := validForm()
			f.Del("client_id")
			f.Del("client_secret")
			f.Set("client_assertion", "x.y.z")
			f.Set("client_assertion_type", ClientAssertionType)
			return f
		}(), 400, 90023},
		{"another body client_id", basic(encoded), withID, 400, 90023},
		{"not base64", "Basic !!!", noCredential, 401, 7000216},
		{"no colon", basic("just-an-id"), noCredential, 401, 7000216},
		{"bad escape", basic(url.QueryEscape(awkwardID) + ":%zz"), noCredential, 401, 7000216},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := postBasic(t, srv.URL+e.TokenPath(), tt.authorization, tt.form)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %v", r.status, tt.status, r.body)
			}
			if tt.status == 200 {
				return
			}
			if codes, _ := r.body["error_codes"].([]any); len(codes) != 1 || codes[0] != float64(tt.aadsts) {
				t.Errorf("error_codes = %v, want [%d]", r.body["error_codes"], tt.aadsts)
			}
		})
	}
}
