package entra

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
)

// secretCredential sends a client secret in the form body, or with basic in
// an HTTP Basic Authorization header, never both.
type secretCredential struct {
	formCredential
	secret string
	basic  bool
}

func (s secretCredential) newRequest(ctx context.Context, tr tokenRequest) (*http.Request, []string, error) {
	if !s.basic {
		req, err := s.post(ctx, tr, url.Values{"client_secret": {s.secret}})
		return req, []string{s.secret}, err
	}
	req, err := s.post(ctx, tr, nil)
	if err != nil {
		return nil, nil, err
	}
	authorization := basicAuthorization(s.clientID, s.secret)
	req.Header.Set("Authorization", authorization)
	return req, []string{s.secret, authorization[len("Basic "):]}, nil
}

func (secretCredential) kind() string { return "client_secret" }

// fingerprint: the secret's digest, and with basic that it is sent in the
// Authorization header (post, the default, adds nothing: its fingerprint
// is the one from before client_auth existed).
func (s secretCredential) fingerprint() string {
	sum := sha256.Sum256([]byte("caddy-entra client secret\n" + s.secret))
	if s.basic {
		return hex.EncodeToString(sum[:]) + "\nclient_auth=basic"
	}
	return hex.EncodeToString(sum[:])
}
