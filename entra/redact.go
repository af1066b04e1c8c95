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

// redactor removes secrets (a client secret, an assertion, a managed
// identity header) from text an endpoint sent back, in the forms an echo
// could take: as sent, query-escaped (as in the form body) and
// path-escaped. A nil *redactor removes nothing.
type redactor struct {
	forms []string // longest first, so a form containing another goes whole
}

// newRedactor returns a redactor for secrets (empty ones are ignored), nil
// when there is none.
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

// apply returns s with every form of every secret masked.
func (r *redactor) apply(s string) string {
	if r == nil {
		return s
	}
	for _, form := range r.forms {
		s = strings.ReplaceAll(s, form, redactionMask)
	}
	return s
}

// sanitizeField keeps the first line of s, drops other control characters
// and invalid UTF-8, and cuts it to at most max bytes on a rune boundary.
// It masks r's secrets first: in s as given (a secret holding a line break or a control character), again once
// the line is cleaned (an echo with control characters inside the secret),
// and only then cuts to max, so that no part of a secret straddling the cut
// survives.
func sanitizeField(s string, max int, r *redactor) string {
	s = r.apply(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	var b strings.Builder
	for _, c := range s {
		if c == utf8.RuneError || c < ' ' || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			continue
		}
		b.WriteRune(c)
	}
	s = r.apply(b.String())
	if len(s) > max {
		cut := 0
		for i, c := range s {
			if i+utf8.RuneLen(c) > max {
				break
			}
			cut = i + utf8.RuneLen(c)
		}
		s = s[:cut]
	}
	return strings.TrimSpace(s)
}
