package entra

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
)

// secretCredential authenticates with a client secret (client_secret_post).
type secretCredential struct {
	formCredential
	secret string
}

func (s secretCredential) newRequest(ctx context.Context, tr tokenRequest) (*http.Request, []string, error) {
	req, err := s.post(ctx, tr, url.Values{"client_secret": {s.secret}})
	return req, []string{s.secret}, err
}

func (secretCredential) kind() string { return "client_secret" }

func (s secretCredential) fingerprint() string {
	sum := sha256.Sum256([]byte("caddy-entra client secret\n" + s.secret))
	return hex.EncodeToString(sum[:])
}
