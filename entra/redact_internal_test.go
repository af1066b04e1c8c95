package entra

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMaskPieces(t *testing.T) {
	const secret = "Zq7Pw3Kx9Lm2Vb8Nc4Rt"
	const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMzQ1Njc4OSJ9.Sg4Hk7Wq2Xz5Cv8Bn3Mp6Lr9"
	r := newRedactor(append(assertionSecrets(jwt), secret)...)
	for _, tc := range []struct {
		name, text string
		limit      int
		want       string
	}{
		{"no piece", "AADSTS7000215: invalid client secret", 400, "AADSTS7000215: invalid client secret"},
		{"8 characters", "starts '" + secret[:8] + "'", 400, "starts '[REDACTED]'"},
		{"7 characters stay", "starts '" + secret[:7] + "'", 400, "starts '" + secret[:7] + "'"},
		{"from the middle", "x" + secret[5:17] + "y", 400, "x[REDACTED]y"},
		{"a signature's prefix", "sig " + jwt[len(jwt)-24:][:10], 400, "sig [REDACTED]"},
		{"across the dots", "a " + jwt[15:40] + " b", 400, "a [REDACTED] b"},
		{"two secrets' pieces in one run", secret[12:] + jwt[:9], 400, "[REDACTED]"},
		{"two runs", secret[:8] + " and " + secret[10:], 400, "[REDACTED] and [REDACTED]"},
		{"a piece straddling the limit", "0123456789" + secret[:10], 12, "0123456789[REDACTED]"},
		{"a piece ending at the limit", "0123" + secret[:8] + "tail", 12, "0123[REDACTED]"},
		{"a piece after the limit", "0123456789ab" + secret[:10], 12, "0123456789ab"},
		{"cut without a piece", "0123456789abcdef", 12, "0123456789ab"},
		{"after a multi-byte character", "é" + secret[:8], 400, "é[REDACTED]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.maskPieces(tc.text, tc.limit); got != tc.want {
				t.Errorf("maskPieces(%q, %d) = %q, want %q", tc.text, tc.limit, got, tc.want)
			}
		})
	}
	if got := (*redactor)(nil).maskPieces("0123456789"+secret, 12); got != "0123456789Zq" {
		t.Errorf("a nil redactor: %q, want the text cut", got)
	}
}

// A run that begins inside a character (the second byte of Ķ, C4 B6, is
// that of ö in the secret) leaves valid UTF-8: the character's first byte
// goes.
func TestMaskPiecesKeepsUTF8Valid(t *testing.T) {
	r := newRedactor("geheim-Wört-9d8c")
	if got := r.maskPieces("xĶrt-9d8c!", 400); got != "x[REDACTED]!" {
		t.Errorf("got %q, want %q", got, "x[REDACTED]!")
	}
}

// The claims of an error answer holding a piece of a secret are dropped,
// as they are when they hold a whole one.
func TestClaimsWithAPieceOfASecretAreDropped(t *testing.T) {
	const secret = "Zq7Pw3Kx9Lm2Vb8Nc4Rt"
	r := newRedactor(secret)
	for claims, want := range map[string]string{
		`{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}`: `{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}`,
		`{"access_token":{"x":{"value":"` + secret + `"}}}`:                "",
		`{"access_token":{"x":{"value":"` + secret[4:14] + `"}}}`:          "",
	} {
		err := errorFromFields(400, nil, map[string]json.RawMessage{"claims": quoteJSON(t, claims)}, r)
		if err.Claims != want {
			t.Errorf("claims %s: Claims = %q, want %q", claims, err.Claims, want)
		}
	}
}

// FuzzMaskPieces: whatever the text (valid UTF-8, as sanitizeField and
// claimsField give it), secret and limit, no run of minSecretPiece bytes of
// the secret is left, and nothing of the text past the limit.
func FuzzMaskPieces(f *testing.F) {
	f.Add("starts 'Zq7Pw3Kx' and 'Kx9Lm2Vb8N'", "Zq7Pw3Kx9Lm2Vb8Nc4Rt", 400)
	f.Add("0123456789Zq7Pw3Kx9L", "Zq7Pw3Kx9Lm2Vb8Nc4Rt", 12)
	f.Add("aaaaaaaaaaaaaaaaaaaaaaaaa", "aaaaaaaaa", 9)
	f.Add("xĶrt-9d8c!", "geheim-Wört-9d8c", 5)
	f.Fuzz(func(t *testing.T, text, secret string, limit int) {
		if limit < 0 || limit > 1<<12 || !utf8.ValidString(text) || strings.ContainsAny(secret, "[]") {
			return // the mask itself is made of brackets and letters
		}
		r := newRedactor(secret)
		got := r.maskPieces(text, limit)
		for _, form := range r.formsOrNil() {
			for i := 0; i+minSecretPiece <= len(got); i++ {
				if strings.Contains(form, got[i:i+minSecretPiece]) {
					t.Fatalf("maskPieces(%q, %d) = %q keeps %q of %q", text, limit, got, got[i:i+minSecretPiece], form)
				}
			}
		}
		if unmasked := strings.ReplaceAll(got, redactionMask, ""); len(unmasked) > limit {
			t.Fatalf("maskPieces(%q, %d) = %q keeps more than the limit", text, limit, got)
		}
	})
}

func (r *redactor) formsOrNil() []string {
	if r == nil {
		return nil
	}
	return r.forms
}

func quoteJSON(t *testing.T, s string) json.RawMessage {
	quoted, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return quoted
}
