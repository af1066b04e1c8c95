package entra_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.step.sm/crypto/pemutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// certEmulator starts an emulator and returns it with its server.
func certEmulator(t *testing.T) (*entratest.Emulator, *httptest.Server) {
	t.Helper()
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return emu, srv
}

// certClient makes a Client with a certificate credential against srv,
// recording its requests.
func certClient(t *testing.T, emu *entratest.Emulator, srv *httptest.Server, cred entra.CertificateCredential) (*entra.Client, *formRecorder) {
	t.Helper()
	recorder := &formRecorder{}
	client, err := entra.NewClient(entra.Config{
		TenantID:          emu.TenantID(),
		ClientID:          testClientID,
		ClientCertificate: &cred,
		AuthorityHost:     srv.URL,
		HTTPClient:        &http.Client{Transport: recorder},
	})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return client, recorder
}

func TestCertificateCredential(t *testing.T) {
	emu, srv := certEmulator(t)
	key := rsaKey(t, 0)
	cert := newCert(t, key, "app", false, nil, nil)
	emu.AddCertificateClient(testClientID, cert)
	dir := t.TempDir()
	client, recorder := certClient(t, emu, srv, entra.CertificateCredential{
		CertFile: writeFile(t, dir, "cert.pem", certPEM(cert)),
		KeyFile:  writeFile(t, dir, "key.pem", pkcs8PEM(t, key)),
	})
	if client.CredentialType() != "client_certificate" {
		t.Errorf("CredentialType() = %q", client.CredentialType())
	}

	for range 2 {
		token, err := client.Token(context.Background(), []string{graphScope})
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		claims, err := emu.Verify(token.AccessToken)
		if err != nil || claims.AppID != testClientID || claims.AppIDACR != "2" {
			t.Fatalf("Verify: %v %+v", err, claims)
		}
	}
	if emu.AssertionsAccepted() != 2 {
		t.Errorf("AssertionsAccepted = %d, want 2", emu.AssertionsAccepted())
	}

	forms := recorder.Forms()
	if len(forms) != 2 {
		t.Fatalf("%d requests recorded, want 2", len(forms))
	}
	thumbprint := sha256.Sum256(cert.Raw)
	var jtis []string
	for _, form := range forms {
		if form.Has("client_secret") || form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			t.Errorf("form = %v", form)
		}
		var claims jwt.RegisteredClaims
		token, _, err := jwt.NewParser().ParseUnverified(form.Get("client_assertion"), &claims)
		if err != nil {
			t.Fatal(err)
		}
		if token.Header["alg"] != "PS256" || token.Header["typ"] != "JWT" ||
			token.Header["x5t#S256"] != base64.RawURLEncoding.EncodeToString(thumbprint[:]) {
			t.Errorf("header = %v", token.Header)
		}
		if _, ok := token.Header["x5c"]; ok {
			t.Error("x5c sent without SendX5C")
		}
		if claims.Issuer != testClientID || claims.Subject != testClientID ||
			len(claims.Audience) != 1 || claims.Audience[0] != client.TokenEndpoint() {
			t.Errorf("iss, sub, aud = %q, %q, %v", claims.Issuer, claims.Subject, claims.Audience)
		}
		if !claims.NotBefore.Equal(claims.IssuedAt.Time) || claims.ExpiresAt.Sub(claims.IssuedAt.Time) != 5*time.Minute {
			t.Errorf("iat, nbf, exp = %v, %v, %v", claims.IssuedAt, claims.NotBefore, claims.ExpiresAt)
		}
		if len(claims.ID) < 32 {
			t.Errorf("jti %q is too short to hold 16 random bytes", claims.ID)
		}
		jtis = append(jtis, claims.ID)
	}
	if jtis[0] == jtis[1] || forms[0].Get("client_assertion") == forms[1].Get("client_assertion") {
		t.Error("two requests sent the same assertion")
	}
}

// TestCertificateErrorHasNoAssertion: the assertion never reaches an error
// message, even when the endpoint echoes it.
func TestCertificateErrorHasNoAssertion(t *testing.T) {
	var sent string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		sent = r.PostForm.Get("client_assertion")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"AADSTS700027: bad ` + sent + `","error_codes":[700027],"trace_id":"t1"}`))
	}))
	defer srv.Close()
	key := rsaKey(t, 0)
	cert := newCert(t, key, "app", false, nil, nil)
	dir := t.TempDir()
	client, err := entra.NewClient(entra.Config{
		ClientID:      testClientID,
		TokenEndpoint: srv.URL + "/token",
		ClientCertificate: &entra.CertificateCredential{
			CertFile: writeFile(t, dir, "both.pem", append(certPEM(cert), pkcs1PEM(key)...)),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Token(context.Background(), []string{graphScope})
	reqErr := requestError(t, err)
	if sent == "" {
		t.Fatal("no assertion sent")
	}
	assertNoLeak(t, err.Error(), sent, string(pkcs1PEM(key)))
	if !reqErr.PermanentFailure() || !strings.Contains(reqErr.Summary(), "AADSTS700027") {
		t.Errorf("PermanentFailure, Summary = %v, %q", reqErr.PermanentFailure(), reqErr.Summary())
	}
}

func TestCertificateSendX5CWithSubjectNameIssuer(t *testing.T) {
	emu, srv := certEmulator(t)
	caKey, leafKey := rsaKey(t, 0), rsaKey(t, 1)
	ca := newCert(t, caKey, "Contoso test CA", true, nil, nil)
	leaf := newCert(t, leafKey, "sidecar.contoso.example", false, ca, caKey)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	emu.AddSNIClient(testClientID, roots, "sidecar.contoso.example")

	dir := t.TempDir()
	// Chain before leaf in the file: the leaf is the one matching the key.
	client, recorder := certClient(t, emu, srv, entra.CertificateCredential{
		CertFile: writeFile(t, dir, "chain.pem", append(certPEM(ca, leaf), pkcs1PEM(leafKey)...)),
		SendX5C:  true,
	})
	if _, err := client.Token(context.Background(), []string{graphScope}); err != nil {
		t.Fatalf("Token: %v", err)
	}
	token, _, err := jwt.NewParser().ParseUnverified(recorder.Forms()[0].Get("client_assertion"), &jwt.RegisteredClaims{})
	if err != nil {
		t.Fatal(err)
	}
	x5c, _ := token.Header["x5c"].([]any)
	if len(x5c) != 2 || x5c[0] != base64.StdEncoding.EncodeToString(leaf.Raw) || x5c[1] != base64.StdEncoding.EncodeToString(ca.Raw) {
		t.Errorf("x5c = %v, want leaf then CA", token.Header["x5c"])
	}

	// Without x5c the same client is not recognised: no certificate is
	// registered, only the subject name.
	plain, _ := certClient(t, emu, srv, entra.CertificateCredential{CertFile: writeFile(t, dir, "chain.pem", append(certPEM(leaf, ca), pkcs1PEM(leafKey)...))})
	_, err = plain.Token(context.Background(), []string{graphScope})
	if reqErr := requestError(t, err); reqErr.StatusCode != 401 || len(reqErr.ErrorCodes) != 1 || reqErr.ErrorCodes[0] != 700027 {
		t.Errorf("without x5c: %v", err)
	}
}

func TestCertificateRotation(t *testing.T) {
	emu, srv := certEmulator(t)
	oldKey, newKey := rsaKey(t, 0), rsaKey(t, 1)
	oldCert := newCert(t, oldKey, "app 2024", false, nil, nil)
	newCert_ := newCert(t, newKey, "app 2025", false, nil, nil)
	emu.AddCertificateClient(testClientID, oldCert)
	dir := t.TempDir()
	certFile := writeFile(t, dir, "tls.crt", certPEM(oldCert))
	keyFile := writeFile(t, dir, "tls.key", pkcs1PEM(oldKey))
	client, recorder := certClient(t, emu, srv, entra.CertificateCredential{CertFile: certFile, KeyFile: keyFile})
	token := func() error {
		_, err := client.Token(context.Background(), []string{graphScope})
		return err
	}
	lastThumbprint := func() string { return lastAssertionThumbprint(t, recorder) }

	if err := token(); err != nil {
		t.Fatalf("before rotation: %v", err)
	}
	before := client.CredentialFingerprint()

	// A rotation half done: the new certificate, the old key. The last
	// good pair keeps signing.
	writeFile(t, dir, "tls.crt", certPEM(newCert_))
	if err := token(); err != nil || lastThumbprint() != thumbprint(oldCert) {
		t.Fatalf("half-rotated files: err %v, signed with %s", err, lastThumbprint())
	}
	// A truncated key file is no better.
	writeFile(t, dir, "tls.key", pkcs1PEM(newKey)[:100])
	if err := token(); err != nil || lastThumbprint() != thumbprint(oldCert) {
		t.Fatalf("truncated key: err %v", err)
	}

	// The rotation completes; Entra now knows only the new certificate.
	writeFile(t, dir, "tls.key", pkcs1PEM(newKey))
	emu.AddCertificateClient(testClientID, newCert_)
	if err := token(); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if lastThumbprint() != thumbprint(newCert_) {
		t.Error("after rotation the assertion names the old certificate")
	}
	after := client.CredentialFingerprint()
	if after == before || after == "" {
		t.Error("CredentialFingerprint did not change with the rotated certificate")
	}
	if strings.Contains(after, string(pkcs1PEM(newKey))[40:80]) {
		t.Error("CredentialFingerprint holds key material")
	}
	if emu.AssertionsAccepted() != 4 {
		t.Errorf("AssertionsAccepted = %d, want 4", emu.AssertionsAccepted())
	}

	// The files vanish (e.g. a Secret being re-mounted): the last good
	// pair still signs.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := token(); err != nil {
		t.Fatalf("with the key file gone: %v", err)
	}
}

// A rotation to complete files that never load (a PFX exported with
// another password than key_password, a certificate and key that do not
// match) keeps the last good certificate signing, as a half-written file
// does, and is warned of once per content, naming the field and the
// cause, never a password or key material; files that load then are
// taken, and said so.
func TestUnloadableRotatedCertificateIsWarnedOnce(t *testing.T) {
	emu, srv := certEmulator(t)
	oldKey, newKey := rsaKey(t, 0), rsaKey(t, 1)
	oldCert := newCert(t, oldKey, "app 2025", false, nil, nil)
	newC := newCert(t, newKey, "app 2026", false, nil, nil)
	emu.AddCertificateClient(testClientID, oldCert)
	pfx := func(key any, cert *x509.Certificate, password string) []byte {
		t.Helper()
		data, err := pkcs12.Modern.Encode(key, cert, nil, password)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	dir := t.TempDir()
	path := writeFile(t, dir, "app.pfx", pfx(oldKey, oldCert, "pw-2025"))
	core, logs := observer.New(zapcore.DebugLevel)
	recorder := &formRecorder{}
	client, err := entra.NewClient(entra.Config{TenantID: emu.TenantID(), ClientID: testClientID, AuthorityHost: srv.URL,
		ClientCertificate: &entra.CertificateCredential{CertFile: path, KeyPassword: "pw-2025"},
		HTTPClient:        &http.Client{Transport: recorder}, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	signedWith := func() string {
		t.Helper()
		if _, err := client.Token(context.Background(), []string{graphScope}); err != nil {
			t.Fatalf("token request: %v", err)
		}
		return lastAssertionThumbprint(t, recorder)
	}
	warnings := func() []observer.LoggedEntry { return logs.FilterLevelExact(zapcore.WarnLevel).AllUntimed() }
	if signedWith() != thumbprint(oldCert) || logs.Len() != 0 {
		t.Fatalf("before the rotation: %d logs", logs.Len())
	}
	before := client.CredentialFingerprint()

	// The new year's PFX, exported with a password the config does not have.
	writeFile(t, dir, "app.pfx", pfx(newKey, newC, "pw-2026"))
	for range 3 { // token requests and fingerprints read it again: one warning
		if signedWith() != thumbprint(oldCert) || client.CredentialFingerprint() != before {
			t.Fatal("an unloadable file replaced the last good certificate")
		}
	}
	if w := warnings(); len(w) != 1 || w[0].ContextMap()["field"] != "client_certificate" ||
		!strings.Contains(w[0].Message, "last good certificate stays in use") ||
		!strings.Contains(fmt.Sprint(w[0].ContextMap()["error"]), "PKCS#12") {
		t.Fatalf("after a rotation to a PFX with another password: warnings %v, want one naming client_certificate and the cause", w)
	}

	// Another unloadable content: the new certificate beside the old key.
	writeFile(t, dir, "app.pfx", append(certPEM(newC), pkcs1PEM(oldKey)...))
	if signedWith() != thumbprint(oldCert) {
		t.Fatal("a mismatched pair replaced the last good certificate")
	}
	if w := warnings(); len(w) != 2 || !strings.Contains(fmt.Sprint(w[1].ContextMap()["error"]), "do not match") {
		t.Fatalf("after a mismatched pair: warnings %v, want a second one with its cause", w)
	}
	// The file deleted: warned of once too, with the cause.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if signedWith() != thumbprint(oldCert) {
			t.Fatal("a deleted file replaced the last good certificate")
		}
	}
	if w := warnings(); len(w) != 3 || !strings.Contains(w[2].Message, "cannot be read") ||
		!strings.Contains(fmt.Sprint(w[2].ContextMap()["error"]), "does not exist") {
		t.Fatalf("after the file was deleted: warnings %v, want a third one with its cause", w)
	}
	for _, entry := range logs.AllUntimed() {
		text := entry.Message + fmt.Sprint(entry.ContextMap())
		for _, secret := range []string{"pw-2025", "pw-2026", path, string(pkcs1PEM(oldKey))[40:80]} {
			if strings.Contains(text, secret) {
				t.Errorf("a log holds a password, the path or key material: %s", text)
			}
		}
	}

	// The right file: taken, and said so.
	writeFile(t, dir, "app.pfx", pfx(newKey, newC, "pw-2025"))
	emu.AddCertificateClient(testClientID, newC)
	if signedWith() != thumbprint(newC) || client.CredentialFingerprint() == before {
		t.Fatal("the loadable rotation was not taken")
	}
	if infos := logs.FilterLevelExact(zapcore.InfoLevel).AllUntimed(); len(infos) != 2 || len(warnings()) != 3 {
		t.Errorf("after the loadable rotation: infos %v, warnings %d; want two infos (readable, in use) and no new warning", infos, len(warnings()))
	}
}

func TestCertificateKeyFormats(t *testing.T) {
	emu, srv := certEmulator(t)
	key := rsaKey(t, 2)
	cert := newCert(t, key, "app", false, nil, nil)
	emu.AddCertificateClient(testClientID, cert)
	dir := t.TempDir()
	const password = "k3y-passw0rd"

	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	encrypted, err := pemutil.EncryptPKCS8PrivateKey(rand.Reader, der, []byte(password), x509.PEMCipherAES256)
	if err != nil {
		t.Fatal(err)
	}
	pfx, err := pkcs12.Modern.Encode(key, cert, nil, password)
	if err != nil {
		t.Fatal(err)
	}

	for name, cred := range map[string]entra.CertificateCredential{
		"PKCS#1 key file":        {CertFile: writeFile(t, dir, "a.crt", certPEM(cert)), KeyFile: writeFile(t, dir, "a.key", pkcs1PEM(key))},
		"PKCS#8 key in the cert": {CertFile: writeFile(t, dir, "b.pem", append(pkcs8PEM(t, key), certPEM(cert)...))},
		"encrypted PKCS#8":       {CertFile: writeFile(t, dir, "c.crt", certPEM(cert)), KeyFile: writeFile(t, dir, "c.key", pemEncode(encrypted.Type, encrypted.Bytes)), KeyPassword: password},
		"PKCS#12":                {CertFile: writeFile(t, dir, "d.pfx", pfx), KeyPassword: password},
	} {
		t.Run(name, func(t *testing.T) {
			client, _ := certClient(t, emu, srv, cred)
			if _, err := client.Token(context.Background(), []string{graphScope}); err != nil {
				t.Fatalf("Token: %v", err)
			}
		})
	}
}

func TestCertificateConfigErrors(t *testing.T) {
	key, otherKey := rsaKey(t, 0), rsaKey(t, 1)
	cert := newCert(t, key, "app", false, nil, nil)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const password = "the-key-password"
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	encrypted, err := pemutil.EncryptPKCS8PrivateKey(rand.Reader, der, []byte(password), x509.PEMCipherAES256)
	if err != nil {
		t.Fatal(err)
	}
	encryptedPEM := pemEncode(encrypted.Type, encrypted.Bytes)
	dir := t.TempDir()
	certFile := writeFile(t, dir, "cert.pem", certPEM(cert))

	tests := []struct {
		name string
		cred entra.CertificateCredential
		want string
	}{
		{"no cert file", entra.CertificateCredential{}, "a certificate file is required"},
		{"missing cert file", entra.CertificateCredential{CertFile: dir + "/nope.pem", KeyFile: dir + "/nope.key"}, "reading certificate: the file does not exist"},
		{"missing key file", entra.CertificateCredential{CertFile: certFile, KeyFile: dir + "/nope.key"}, "reading private key: the file does not exist"},
		{"a directory", entra.CertificateCredential{CertFile: dir}, "reading certificate: the path is a directory"},
		{"no key", entra.CertificateCredential{CertFile: certFile}, "no private key found"},
		{"no certificate", entra.CertificateCredential{CertFile: writeFile(t, dir, "key-only.pem", pkcs1PEM(key))}, "no certificate found"},
		{"key does not match", entra.CertificateCredential{CertFile: certFile, KeyFile: writeFile(t, dir, "other.key", pkcs1PEM(otherKey))}, "do not match"},
		{"ECDSA key", entra.CertificateCredential{CertFile: certFile, KeyFile: writeFile(t, dir, "ec.key", pkcs8PEM(t, ecKey))}, "private key is ECDSA"},
		{"encrypted key without password", entra.CertificateCredential{CertFile: certFile, KeyFile: writeFile(t, dir, "enc.key", encryptedPEM)}, "a key password is required"},
		{"encrypted key, wrong password", entra.CertificateCredential{CertFile: certFile, KeyFile: writeFile(t, dir, "enc2.key", encryptedPEM), KeyPassword: "wrong-password"}, "wrong password"},
		{"garbage", entra.CertificateCredential{CertFile: writeFile(t, dir, "garbage.pfx", []byte("not a certificate"))}, "neither PEM nor a readable PKCS#12"},
		{"two keys", entra.CertificateCredential{CertFile: writeFile(t, dir, "two.pem", append(append(certPEM(cert), pkcs1PEM(key)...), pkcs1PEM(key)...))}, "more than one private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := tt.cred
			_, err := entra.NewClient(entra.Config{TenantID: "t", ClientID: testClientID, ClientCertificate: &cred})
			var cfgErr *entra.ConfigError
			if !errors.As(err, &cfgErr) || cfgErr.Field != "client_certificate" {
				t.Fatalf("error = %v, want a client_certificate ConfigError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			assertNoLeak(t, err.Error(), password, string(pkcs1PEM(key)), string(encryptedPEM))
		})
	}
}

// lastAssertionThumbprint is the x5t#S256 of the last client assertion
// recorder saw.
func lastAssertionThumbprint(t *testing.T, recorder *formRecorder) string {
	t.Helper()
	forms := recorder.Forms()
	parsed, _, err := jwt.NewParser().ParseUnverified(forms[len(forms)-1].Get("client_assertion"), &jwt.RegisteredClaims{})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := parsed.Header["x5t#S256"].(string)
	return s
}

// thumbprint is what x5t#S256 holds for c.
func thumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
