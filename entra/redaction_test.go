package entra_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

// echoingClient returns a client with secret whose token endpoint answers
// 400 with the error fields fields (and headers headers).
func echoingClient(t *testing.T, secret string, fields map[string]any, headers map[string]string) *entra.Client {
	t.Helper()
	body, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	client, err := entra.NewClient(entra.Config{ClientID: testClientID, ClientSecret: secret, TokenEndpoint: srv.URL + "/token"})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// assertNoPartOf fails if any 5-byte piece of secret appears in text.
func assertNoPartOf(t *testing.T, what, text, secret string) {
	t.Helper()
	for i := 0; i+5 <= len(secret); i++ {
		if piece := secret[i : i+5]; strings.Contains(text, piece) {
			t.Errorf("%s contains %q, a piece of the secret: %s", what, piece, text)
			return
		}
	}
}

// TestSecretStraddlingTheCutIsRedacted: an echoed secret that crosses the
// 400-byte cut of error_description (or the 128-byte cut of trace_id) must
// be masked before the cut, so that no prefix of it survives.
func TestSecretStraddlingTheCutIsRedacted(t *testing.T) {
	const secret = "Sup3rS3cretV4lue-QQ_zz9kk"
	desc := "AADSTS7000215: " + strings.Repeat(".", 400-len("AADSTS7000215: ")-10) + secret + " trailing"
	trace := strings.Repeat("-", 128-8) + secret
	client := echoingClient(t, secret, map[string]any{
		"error": "invalid_client", "error_description": desc, "error_codes": []int{7000215}, "trace_id": trace,
	}, nil)
	_, err := client.Token(context.Background(), []string{graphScope})
	var reqErr *entra.RequestError
	if !errors.As(err, &reqErr) {
		t.Fatalf("Token() error = %v, want a *RequestError", err)
	}
	for what, text := range map[string]string{"Error()": err.Error(), "Description": reqErr.Description, "TraceID": reqErr.TraceID} {
		assertNoPartOf(t, what, text, secret)
	}
	if !strings.Contains(reqErr.Description, "[REDACTED]") {
		t.Errorf("Description %q: want the secret masked, not cut off", reqErr.Description)
	}
	if len(reqErr.Description) > 400 || len(reqErr.TraceID) > 128 {
		t.Errorf("fields not cut to length: %d, %d bytes", len(reqErr.Description), len(reqErr.TraceID))
	}
}

// TestEscapedSecretIsRedacted: an endpoint echoing the form body shows the
// secret query-escaped; one echoing a path shows it path-escaped.
func TestEscapedSecretIsRedacted(t *testing.T) {
	const secret = "s3cr3t/+ &=?%~x{y}" // escapes differently in a query and a path
	queryForm, pathForm := url.QueryEscape(secret), url.PathEscape(secret)
	if queryForm == secret || pathForm == secret || queryForm == pathForm {
		t.Fatalf("test secret escapes too plainly: %q %q", queryForm, pathForm)
	}
	client := echoingClient(t, secret, map[string]any{
		"error":             "invalid_request",
		"error_description": "you sent client_secret=" + queryForm + "&grant_type=client_credentials",
		"trace_id":          "/echo/" + pathForm,
		"correlation_id":    "raw " + secret,
	}, map[string]string{"X-Ms-Request-Id": queryForm})
	_, err := client.Token(context.Background(), []string{graphScope})
	var reqErr *entra.RequestError
	if !errors.As(err, &reqErr) {
		t.Fatalf("Token() error = %v, want a *RequestError", err)
	}
	for _, form := range []string{secret, queryForm, pathForm, "s3cr3t"} {
		if strings.Contains(err.Error(), form) {
			t.Errorf("error contains the secret as %q: %s", form, err)
		}
	}
	for what, field := range map[string]string{"Description": reqErr.Description, "TraceID": reqErr.TraceID, "CorrelationID": reqErr.CorrelationID} {
		if !strings.Contains(field, "[REDACTED]") {
			t.Errorf("%s = %q, want the secret masked", what, field)
		}
	}
}

// TestManagedIdentityHeaderRedactedBeforeCut: the App Service identity
// header, echoed across the cut of "message", does not survive in part.
func TestManagedIdentityHeaderRedactedBeforeCut(t *testing.T) {
	const header = "IdH3ad3r-S3cret-0123456789"
	msg := strings.Repeat(".", 400-10) + header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		body, _ := json.Marshal(map[string]string{"message": msg})
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	client, err := entra.NewClient(entra.Config{Timeout: 5 * time.Second, ManagedIdentity: &entra.ManagedIdentityCredential{
		IdentityEndpoint: srv.URL + "/msi/token", IdentityHeader: header,
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Token(context.Background(), []string{graphScope})
	var reqErr *entra.RequestError
	if !errors.As(err, &reqErr) {
		t.Fatalf("Token() error = %v, want a *RequestError", err)
	}
	assertNoPartOf(t, "Error()", err.Error(), header)
	if !strings.Contains(reqErr.Description, "[REDACTED]") {
		t.Errorf("Description %q: want the header masked", reqErr.Description)
	}
}

func TestRequestErrorHTTPStatus(t *testing.T) {
	var withStatus interface{ HTTPStatus() int } = &entra.RequestError{StatusCode: 503}
	if got := withStatus.HTTPStatus(); got != 503 {
		t.Errorf("HTTPStatus() = %d, want 503", got)
	}
	if got := (&entra.RequestError{Err: context.DeadlineExceeded}).HTTPStatus(); got != 0 {
		t.Errorf("HTTPStatus() without a response = %d, want 0", got)
	}
}

// sentSecrets returns what r carries that no error may echo, even in part:
// the client secret, the client assertion, the user's token and the
// managed identity header.
func sentSecrets(r *http.Request) []string {
	_ = r.ParseForm()
	var sent []string
	for _, v := range []string{r.PostForm.Get("client_secret"), r.PostForm.Get("client_assertion"),
		r.PostForm.Get("assertion"), r.Header.Get("X-IDENTITY-HEADER")} {
		if v != "" {
			sent = append(sent, v)
		}
	}
	return sent
}

// echoedPieces returns pieces of secret an endpoint could echo: its first
// and last 8 characters, 12 from the middle, and of a JWT its payload, its
// signature, the signature's first 40 and the token's first 150.
func echoedPieces(secret string) []string {
	pieces := []string{secret[:8], secret[len(secret)-8:], secret[len(secret)/2:][:12]}
	if parts := strings.Split(secret, "."); len(parts) == 3 {
		pieces = append(pieces, parts[1], parts[2], parts[2][:min(40, len(parts[2]))], secret[:min(150, len(secret))])
	}
	return pieces
}

// TestEchoedPiecesOfEveryCredentialAreMasked: a token endpoint whose error
// fields echo pieces of what it was sent (a secret's first 8 characters, an
// assertion's signature or payload, a prefix of the user's token) gets none
// of them into the error, whatever the credential.
func TestEchoedPiecesOfEveryCredentialAreMasked(t *testing.T) {
	const secret = "Zq7Pw3Kx-Rb9Vn2Lm_Tc4Yh6Jd-9d8c7b6a5"
	const identityHeader = "Hn4Rt8Lm-Wq2Zx5Cv-Pk7Bj3Ng-1f2e0d9c"
	sent := make(chan []string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secrets := sentSecrets(r)
		sent <- secrets
		var desc []string
		for _, s := range secrets {
			for _, piece := range echoedPieces(s) {
				desc = append(desc, "'"+piece+"'")
			}
		}
		body, _ := json.Marshal(map[string]any{
			"error": "invalid_client", "error_description": "AADSTS7000215: you sent " + strings.Join(desc, ", "),
			"message": "AADSTS7000215: you sent " + strings.Join(desc, ", "), "error_codes": []int{7000215},
			"trace_id": "t " + secrets[0][3:30], "correlation_id": "c " + secrets[len(secrets)-1][10:30],
		})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write(body)
	}))
	defer srv.Close()

	// A Kubernetes service account token, the shape of a federated token.
	fedToken := jwtWith(t, map[string]any{"iss": "https://k8s.example", "sub": "system:serviceaccount:default:app",
		"aud": "api://AzureADTokenExchange", "exp": time.Now().Add(time.Hour).Unix()}) + "Fq8Wd2Ks9Lp3Xm7Rv4Tn6Yb1Hc5Jg0Ze"
	key := rsaKey(t, 0)
	dir := t.TempDir()
	certFile := writeFile(t, dir, "both.pem", append(certPEM(newCert(t, key, "app", false, nil, nil)), pkcs1PEM(key)...))
	user, err := entra.ReadUserAssertion(jwtWith(t, userClaims(time.Now()))+"Uq3Mw8Kd5Xp1Lr9Vs6Tb2Nh7Jc4Gz0Ye",
		time.Now(), userRules())
	if err != nil {
		t.Fatal(err)
	}
	endpoint := srv.URL + "/token"
	for _, tc := range []struct {
		name string
		cfg  entra.Config
		obo  bool
	}{
		{"client_secret", entra.Config{ClientSecret: secret, TokenEndpoint: endpoint}, false},
		{"federated_token", entra.Config{FederatedTokenFile: writeFile(t, dir, "token", []byte(fedToken)), TokenEndpoint: endpoint}, false},
		{"client_certificate", entra.Config{ClientCertificate: &entra.CertificateCredential{CertFile: certFile}, TokenEndpoint: endpoint}, false},
		{"on_behalf_of", entra.Config{TenantID: userTenant, ClientSecret: secret, AuthorityHost: srv.URL}, true},
		{"managed_identity", entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{
			IdentityEndpoint: srv.URL + "/msi/token", IdentityHeader: identityHeader}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.ManagedIdentity == nil {
				tc.cfg.ClientID = testClientID
			}
			tc.cfg.Timeout = 10 * time.Second
			client, err := entra.NewClient(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if tc.obo {
				_, err = client.OnBehalfOf(context.Background(), user, []string{graphScope})
			} else {
				_, err = client.Token(context.Background(), []string{graphScope})
			}
			var reqErr *entra.RequestError
			if !errors.As(err, &reqErr) {
				t.Fatalf("error = %v, want a *RequestError", err)
			}
			secrets := <-sent
			if len(secrets) == 0 {
				t.Fatal("the request carried no secret")
			}
			for _, s := range secrets {
				for what, text := range map[string]string{"Error()": err.Error(), "Description": reqErr.Description,
					"TraceID": reqErr.TraceID, "CorrelationID": reqErr.CorrelationID} {
					assertNoPartOf(t, what, text, s)
				}
			}
			if !strings.Contains(reqErr.Description, "'[REDACTED]'") {
				t.Errorf("Description %q: want each piece masked", reqErr.Description)
			}
		})
	}
}

// TestSecretPieceStraddlingTheCutIsRedacted: a piece of a secret echoed
// across the 400-byte cut of error_description, or split by a control
// character, is masked before the cut.
func TestSecretPieceStraddlingTheCutIsRedacted(t *testing.T) {
	const secret = "Sup3rS3cretV4lue-QQ_zz9kk"
	head := "AADSTS7000215: " + strings.Repeat(".", 400-len("AADSTS7000215: ")-5)
	for _, desc := range []string{
		head + secret[:20] + " trailing",
		head + secret[:4] + "\x01" + secret[4:12] + " trailing",
	} {
		client := echoingClient(t, secret, map[string]any{"error": "invalid_client", "error_description": desc}, nil)
		_, err := client.Token(context.Background(), []string{graphScope})
		reqErr := requestError(t, err)
		assertNoPartOf(t, "Description", reqErr.Description, secret)
		if !strings.HasPrefix(reqErr.Description, head+"[REDA") || len(reqErr.Description) != 400 {
			t.Errorf("Description ends %q (%d bytes), want the piece masked and the field cut at 400 bytes",
				reqErr.Description[len(head)-5:], len(reqErr.Description))
		}
	}
}
