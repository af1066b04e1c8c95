package redisstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Sealed records are stored as
//
//	"v1." + kid + "." + base64url_nopad(nonce || ciphertext)
//
// where kid is the first 8 hex characters of SHA-256(key), and ciphertext
// is AES-256-GCM with the store key as associated data, so a record copied
// under another key does not open.
const (
	sealedVersion     = "v1"
	encryptionKeySize = 32
	kidLen            = 8
)

var (
	errSealedMalformed = errors.New("malformed sealed record")
	errSealedNoKey     = errors.New("sealed with a key this replica does not have")
	errSealedOpen      = errors.New("sealed record does not open (tampered, or bound to another key)")
	errNotSealed       = errors.New("record is not sealed but encryption is on")
	errSealedNoKeys    = errors.New("record is sealed but no encryption key is configured")
)

// ParseEncryptionKey decodes a 32-byte key from standard or URL-safe base64,
// padded or not. Its errors never quote the input.
func ParseEncryptionKey(b64 string) ([]byte, error) {
	s := strings.TrimSpace(b64)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		key, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(key) != encryptionKeySize {
			return nil, fmt.Errorf("tokencache: parsing encryption key: %d bytes, want %d (base64 of 32 random bytes: head -c 32 /dev/urandom | base64)",
				len(key), encryptionKeySize)
		}
		return key, nil
	}
	return nil, errors.New("tokencache: parsing encryption key: not base64 (want base64 of 32 random bytes: head -c 32 /dev/urandom | base64)")
}

// sealer seals with its first key and opens with any.
type sealer struct {
	keys []sealKey
}

type sealKey struct {
	kid  string
	aead cipher.AEAD
}

// newSealer makes the keys' ciphers; errors name a key's index, never it.
func newSealer(keys [][]byte) (*sealer, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	s := &sealer{}
	for i, key := range keys {
		if len(key) != encryptionKeySize {
			return nil, fmt.Errorf("tokencache: encryption key %d: %d bytes, want %d", i, len(key), encryptionKeySize)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("tokencache: encryption key %d: %v", i, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("tokencache: encryption key %d: %v", i, err)
		}
		s.keys = append(s.keys, sealKey{kid: keyID(key), aead: aead})
	}
	return s, nil
}

func keyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:])[:kidLen]
}

// seal encrypts plaintext bound to storeKey with the first key.
func (s *sealer) seal(storeKey string, plaintext []byte) []byte {
	k := s.keys[0]
	buf := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	_, _ = rand.Read(buf) // never fails
	buf = k.aead.Seal(buf, buf, plaintext, []byte(storeKey))
	out := make([]byte, 0, len(sealedVersion)+1+kidLen+1+base64.RawURLEncoding.EncodedLen(len(buf)))
	out = append(out, sealedVersion+"."+k.kid+"."...)
	return base64.RawURLEncoding.AppendEncode(out, buf)
}

// open decrypts a sealed value stored under storeKey.
func (s *sealer) open(storeKey string, sealed []byte) ([]byte, error) {
	version, rest, ok := strings.Cut(string(sealed), ".")
	if !ok || version != sealedVersion {
		return nil, errSealedMalformed
	}
	kid, payload, ok := strings.Cut(rest, ".")
	if !ok || len(kid) != kidLen {
		return nil, errSealedMalformed
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, errSealedMalformed
	}
	for _, k := range s.keys {
		if k.kid != kid {
			continue
		}
		if len(raw) < k.aead.NonceSize()+k.aead.Overhead() {
			return nil, errSealedMalformed
		}
		nonce, ciphertext := raw[:k.aead.NonceSize()], raw[k.aead.NonceSize():]
		plain, err := k.aead.Open(nil, nonce, ciphertext, []byte(storeKey))
		if err != nil {
			return nil, errSealedOpen
		}
		return plain, nil
	}
	return nil, errSealedNoKey
}

// isSealed reports whether a stored value looks sealed rather than JSON.
func isSealed(value []byte) bool {
	return strings.HasPrefix(string(value), sealedVersion+".")
}
