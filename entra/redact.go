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

// redactor masks secrets in text an endpoint sent back, in the forms an
// echo could take: as sent, query-escaped and path-escaped. A nil
// *redactor masks nothing.
type redactor struct {
	forms []string // longest first, so a form containing another goes whole
}

// newRedactor returns a redactor of the non-empty secrets, nil for none.
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

func (r *redactor) apply(s string) string {
	if r == nil {
		return s
	}
	for _, form := range r.forms {
		s = strings.ReplaceAll(s, form, redactionMask)
	}
	return s
}

// sanitizeField keeps the first line of s without control characters and
// invalid UTF-8, cut to max bytes on a rune boundary. It masks r's secrets
// before (a secret holding a line break) and after cleaning (control
// characters inside an echo), and only then cuts, so that no part of a
// secret straddling the cut survives.
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
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") // valid but for a rune the cut split
	}
	return strings.TrimSpace(s)
}
