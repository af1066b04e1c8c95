package jws

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"
)

func compact(header, payload, signature string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload)) + "." + signature
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, token string
		want        error
	}{
		{"signed", compact(`{"alg":"RS256","typ":"JWT"}`, `{"exp":1900000000}`, "c2ln"), nil},
		{"alg none", compact(`{"alg":"none"}`, `{"exp":1900000000}`, "c2ln"), ErrUnsigned},
		{"alg None", compact(`{"alg":"None"}`, `{"exp":1900000000}`, "c2ln"), ErrUnsigned},
		{"no alg", compact(`{"typ":"JWT"}`, `{"exp":1900000000}`, "c2ln"), ErrUnsigned},
		{"no signature", compact(`{"alg":"RS256"}`, `{"exp":1900000000}`, ""), ErrUnreadable},
		{"header not JSON", compact(`alg`, `{}`, "c2ln"), ErrUnreadable},
		{"payload not an object", compact(`{"alg":"RS256"}`, `[1]`, "c2ln"), ErrUnreadable},
		{"payload not base64", "eyJhbGciOiJSUzI1NiJ9.!!!.c2ln", ErrUnreadable},
		{"opaque", "opaque-token", ErrNotJWS},
		{"JWE", "a.b.c.d.e", ErrJWE},
		{"enc header", compact(`{"alg":"RSA-OAEP","enc":"A256GCM"}`, `{}`, "c2ln"), ErrJWE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Parse(tc.token)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %v, want %v", err, tc.want)
			}
			if err == nil {
				if exp, ok := tok.Time("exp"); !ok || !exp.Equal(time.Unix(1900000000, 0)) {
					t.Errorf("exp = %v, %v", exp, ok)
				}
			}
		})
	}
}
