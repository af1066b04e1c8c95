package entra

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"time"
)

// secretCredential authenticates with a client secret (client_secret_post).
type secretCredential struct {
	secret string
}

func (s secretCredential) authenticate(form url.Values, _ time.Time) ([]string, error) {
	form.Set("client_secret", s.secret)
	return []string{s.secret}, nil
}

func (secretCredential) kind() string { return "client_secret" }

func (s secretCredential) fingerprint() string {
	sum := sha256.Sum256([]byte("caddy-entra client secret\n" + s.secret))
	return hex.EncodeToString(sum[:])
}
