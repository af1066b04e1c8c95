// Package jws reads the header and the payload of a compact JWS (a JWT
// access token) WITHOUT verifying its signature: enough to tell a token
// that cannot be a signed JWT (alg "none", no alg, an unreadable header or
// payload, a JWE) apart, and to read its time claims. It authenticates
// nothing. It is shared by packages that must not import each other.
package jws

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// MaxPartBytes bounds the encoded header and payload read: Entra's tokens
// are a few KB.
const MaxPartBytes = 64 << 10

// Errors of Parse. They never contain the token.
var (
	// ErrNotJWS: the token has not the three dot-separated parts of a
	// compact JWS (an opaque token, or another format).
	ErrNotJWS = errors.New("the token is not a compact JWS")
	// ErrJWE: the token has the five parts of a compact JWE (an encrypted
	// token), which is not accepted.
	ErrJWE = errors.New("the token is an encrypted JWT (JWE)")
	// ErrUnreadable: the header or payload does not decode as a JSON object,
	// the signature is missing, or a part is too long.
	ErrUnreadable = errors.New("the token's JWS header or payload cannot be read")
	// ErrUnsigned: the header names no alg, or alg "none".
	ErrUnsigned = errors.New("the token's JWS header says it is not signed (alg none or no alg)")
)

// Token is what Parse read.
type Token struct {
	// Alg is the header's alg, never "" or "none".
	Alg string
	// Claims is the payload, numbers as json.Number.
	Claims map[string]any
}

// Parse reads a compact JWS's header and payload, and requires a signed
// one: an alg other than "none" and a non-empty signature part.
func Parse(token string) (*Token, error) {
	parts := strings.Split(token, ".")
	switch len(parts) {
	case 3:
	case 5:
		return nil, ErrJWE
	default:
		return nil, ErrNotJWS
	}
	if parts[2] == "" || len(parts[0]) > MaxPartBytes || len(parts[1]) > MaxPartBytes {
		return nil, ErrUnreadable
	}
	header, err := decodeObject(parts[0])
	if err != nil {
		return nil, ErrUnreadable
	}
	alg, _ := header["alg"].(string)
	if alg == "" || strings.EqualFold(alg, "none") {
		return nil, ErrUnsigned
	}
	if _, ok := header["enc"]; ok {
		return nil, ErrJWE
	}
	claims, err := decodeObject(parts[1])
	if err != nil {
		return nil, ErrUnreadable
	}
	return &Token{Alg: alg, Claims: claims}, nil
}

// decodeObject decodes one base64url part as a JSON object.
func decodeObject(part string) (map[string]any, error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(part, "="))
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, errors.New("not an object")
	}
	return obj, nil
}

// Time returns a NumericDate claim (seconds since the epoch, fractions
// dropped), and false when it is absent or not a number.
func (t *Token) Time(name string) (time.Time, bool) {
	n, ok := t.Claims[name].(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil || f <= 0 || f > 1<<40 {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}
