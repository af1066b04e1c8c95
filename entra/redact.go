package entra

import (
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// redactionMask replaces a secret in an error's text fields, and the access
// token wherever a Token is formatted.
const redactionMask = "[REDACTED]"

// minSecretPiece is the shortest run of characters shared with a secret
// that is masked as a piece of it: an endpoint may echo a prefix ("the
// secret starting 'Zq7Pw3Kx'") or one part of a token. It is the width of
// the uint64 windows maskPieces compares.
const minSecretPiece = 8

// redactor masks secrets in text an endpoint sent back, in the forms an
// echo could take: as sent, query-escaped and path-escaped, whole and by
// any piece of minSecretPiece characters or more. A nil *redactor masks
// nothing.
type redactor struct {
	forms []string // longest first, so a form containing another goes whole
}

// newRedactor returns a redactor of the non-empty secrets, nil for none.
// It only collects them: the work is done on error paths, by apply and
// maskPieces.
func newRedactor(secrets ...string) *redactor {
	var forms []string
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		for _, form := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret)} {
			if !slices.Contains(forms, form) {
				forms = append(forms, form)
			}
		}
	}
	if len(forms) == 0 {
		return nil
	}
	slices.SortStableFunc(forms, func(a, b string) int { return len(b) - len(a) })
	return &redactor{forms: forms}
}

// assertionSecrets returns what a redactor masks of a JWT sent as an
// assertion (a client assertion or an on-behalf-of user's token): the
// token, and its payload and signature on their own, as an endpoint may
// echo one part (maskPieces masks a piece of any part, the header's too).
func assertionSecrets(assertion string) []string {
	return append(strings.Split(assertion, ".")[1:], assertion)
}

// apply masks every whole secret in s.
func (r *redactor) apply(s string) string {
	if r == nil {
		return s
	}
	for _, form := range r.forms {
		s = strings.ReplaceAll(s, form, redactionMask)
	}
	return s
}

// maskPieces masks, in s (valid UTF-8) cut to its first limit bytes,
// every run of minSecretPiece or more bytes that occurs in a secret: each
// byte covered by an 8-byte window of s found in a secret is masked, each
// covered run replaced by one mask. Windows reach up to minSecretPiece-1
// bytes past limit, so the cut leaves no piece of a secret unmasked before
// it. The work is O((n + m) log n) for n = limit and m the secrets'
// length, most of the secrets' windows turned away by a bitmap of s's at
// the cost of a multiplication; it allocates the windows of s, and a new
// string only when one is found in a secret.
func (r *redactor) maskPieces(s string, limit int) string {
	if len(s) > limit {
		s = s[:min(len(s), limit+minSecretPiece-1)]
	} else {
		limit = len(s)
	}
	if r == nil || len(s) < minSecretPiece {
		return s[:limit]
	}
	// The windows of s, as integers, sorted: each window of a secret is
	// looked up once.
	windows := make([]uint64, 0, len(s)-minSecretPiece+1)
	for i := 0; i+minSecretPiece <= len(s); i++ {
		windows = append(windows, window(s, i))
	}
	slices.Sort(windows)
	windows = slices.Compact(windows)
	// A bit per hash of s's windows: most windows of a secret (a user token
	// may be 16 KiB) miss it, and skip the search.
	var seen [1 << 10]uint64
	for _, w := range windows {
		h := windowHash(w)
		seen[h>>6] |= 1 << (h & 63)
	}
	shared := make([]bool, len(windows))
	found := false
	for i, form := range r.forms {
		if slices.ContainsFunc(r.forms[:i], func(longer string) bool { return strings.Contains(longer, form) }) {
			continue // its windows are the longer form's
		}
		for j := 0; j+minSecretPiece <= len(form); j++ {
			w := window(form, j)
			if h := windowHash(w); seen[h>>6]&(1<<(h&63)) == 0 {
				continue
			}
			if k, ok := slices.BinarySearch(windows, w); ok {
				shared[k], found = true, true
			}
		}
	}
	if !found {
		return s[:limit]
	}
	var b strings.Builder
	b.Grow(limit)
	coveredTo := 0 // s[:coveredTo] is covered by the windows seen so far
	for i := 0; i < limit; i++ {
		if i+minSecretPiece <= len(s) {
			if k, _ := slices.BinarySearch(windows, window(s, i)); shared[k] {
				if coveredTo == 0 || i > coveredTo { // a new run
					b.WriteString(redactionMask)
				}
				coveredTo = i + minSecretPiece
			}
		}
		if i >= coveredTo {
			b.WriteByte(s[i])
		}
	}
	// A run may have begun or ended inside a multi-byte character, whose
	// other bytes go: they border a mask, so no two pieces of s are joined.
	return strings.ToValidUTF8(b.String(), "")
}

// windowHash spreads a window over the 16 bits of maskPieces' bitmap
// (Fibonacci hashing).
func windowHash(w uint64) uint64 { return (w * 0x9E3779B97F4A7C15) >> 48 }

// window returns the minSecretPiece bytes of s at i as an integer.
func window(s string, i int) uint64 {
	_ = s[i+7] // one bounds check
	return uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
		uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
}

// maxScanFactor bounds the text maskPieces reads for a field of max bytes:
// masks shorten the pieces they replace, so more than max bytes may be
// needed to fill the field, but an echo of a whole secret is already one
// mask.
const maxScanFactor = 4

// sanitizeField keeps the first line of s without control characters and
// invalid UTF-8, cut to max bytes on a rune boundary. It masks r's secrets
// before (a secret holding a line break) and after cleaning (control
// characters inside an echo), then their pieces, and only then cuts, so
// that no part of a secret straddling the cut survives.
func sanitizeField(s string, max int, r *redactor) string {
	s = r.apply(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	s = r.apply(strings.Map(func(c rune) rune {
		if c == utf8.RuneError || c < ' ' || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			return -1
		}
		return c
	}, s))
	s = r.maskPieces(s, maxScanFactor*max)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") // valid but for a rune the cut split
	}
	return strings.TrimSpace(s)
}
