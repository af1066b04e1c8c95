package entra

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// PermanentFailure reports whether retrying the same request cannot help
// until the configuration changes: the permanent codes of oauthCodes and
// aadstsCodes, other 400/401/403 answers, and a request that cannot be
// made. 408, 429, 5xx, other statuses (IMDS answers 404 and 410 while it
// starts), network errors and malformed 2xx answers are transient.
func (e *RequestError) PermanentFailure() bool {
	switch {
	case e.Code == "temporarily_unavailable", e.StatusCode == http.StatusRequestTimeout,
		e.StatusCode == http.StatusTooManyRequests, e.StatusCode >= 500:
		return false
	case e.StatusCode == 0:
		return errors.Is(e.Err, ErrNoScope) || errors.Is(e.Err, ErrManagedIdentityScope) || errors.Is(e.Err, ErrOnBehalfOf) ||
			errors.Is(e.Err, ErrClaimsChallenge)
	case e.StatusCode >= 200 && e.StatusCode <= 299:
		return false // a malformed success: the next answer may be fine
	}
	switch e.StatusCode {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
		return true
	}
	return oauthCodes[e.Code].permanent || slices.ContainsFunc(e.ErrorCodes, func(code int) bool {
		_, ok := aadstsCodes[code]
		return ok
	})
}

// HTTPStatus returns the status of the endpoint's answer, 0 when there was
// none: the token cache keeps such failures, local to one replica, out of
// the backoff it shares.
func (e *RequestError) HTTPStatus() int { return e.StatusCode }

// RetryAfterHint returns the delay the endpoint asked for with Retry-After,
// 0 for none. With PermanentFailure and HTTPStatus it is what the token
// cache's FetchError reads.
func (e *RequestError) RetryAfterHint() time.Duration { return e.RetryAfter }

// Summary returns a short message for an operator naming the cause and the
// code to look up, e.g. "client secret expired (AADSTS7000222)", "throttled
// (429)", "timed out". It never holds a secret or a token.
func (e *RequestError) Summary() string {
	for _, code := range e.ErrorCodes {
		if known, ok := aadstsCodes[code]; ok {
			return known.summary + " (AADSTS" + strconv.Itoa(code) + ")"
		}
	}
	status := " (" + strconv.Itoa(e.StatusCode) + ")"
	success, tooLarge := e.StatusCode >= 200 && e.StatusCode <= 299, errors.Is(e.Err, ErrResponseTooLarge)
	switch summary := oauthCodes[e.Code].summary; {
	case e.StatusCode == http.StatusTooManyRequests:
		return "throttled" + status
	case e.StatusCode >= 500:
		return "token endpoint unavailable" + status
	case success && tooLarge:
		return "token response too large"
	case success:
		return "malformed token response"
	case summary != "":
		return summary + e.codeSuffix()
	case e.StatusCode != 0 && tooLarge:
		return "token response too large" + status
	case e.StatusCode != 0:
		return "token endpoint answered" + status
	}
	return transportSummary(e.Err)
}

// codeSuffix is " (AADSTSnnn)" for the first AADSTS code, or " (status)".
func (e *RequestError) codeSuffix() string {
	if len(e.ErrorCodes) > 0 {
		return " (AADSTS" + strconv.Itoa(e.ErrorCodes[0]) + ")"
	}
	if e.StatusCode != 0 {
		return " (" + strconv.Itoa(e.StatusCode) + ")"
	}
	return ""
}

// transportSummary names a failure to get any answer.
func transportSummary(err error) string {
	var (
		netErr  net.Error
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		hostErr x509.HostnameError
	)
	switch {
	case err == nil:
		return "token request failed"
	case errors.Is(err, ErrNoScope):
		return "no scope"
	case errors.Is(err, ErrManagedIdentityScope):
		return "managed identity needs exactly one scope"
	case errors.Is(err, ErrOnBehalfOf):
		return "on-behalf-of exchange not possible"
	case errors.Is(err, ErrFederatedTokenUnavailable):
		return "federated token file unavailable"
	case errors.Is(err, errAssertionSigning):
		return "signing client assertion failed"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.As(err, &dnsErr):
		return "host not found"
	case errors.As(err, &certErr), errors.As(err, &unknown), errors.As(err, &hostErr):
		return "TLS certificate not trusted"
	default:
		return "network error"
	}
}

// UserFailure is what a failed on-behalf-of exchange says of the user's
// side, so that the caller answers the user's client rather than count it
// against the application.
type UserFailure int

const (
	// NotUserFailure: the application's failure, a transient one, or not
	// an on-behalf-of exchange.
	NotUserFailure UserFailure = iota
	// UserTokenInvalid: Entra refused the user's token; a new one is needed.
	UserTokenInvalid
	// InteractionRequired: the user must satisfy a claims challenge (MFA,
	// conditional access), in RequestError.Claims when Entra sent one.
	InteractionRequired
	// ConsentRequired: the user or an administrator must consent to the
	// scopes.
	ConsentRequired
)

// String returns "", "user_token_invalid", "interaction_required" or
// "consent_required".
func (f UserFailure) String() string {
	return [...]string{"", "user_token_invalid", "interaction_required", "consent_required"}[f]
}

// UserFailure classifies the failure of an on-behalf-of exchange that Entra
// answered with a 4xx other than 408 and 429: the client's own errors
// (invalid_client, an AADSTS code of the application's configuration...)
// are NotUserFailure; otherwise consent, then interaction, then the user's
// token (also any other invalid_grant or invalid_request, so that a token
// crafted to be refused never passes for the application's failure).
func (e *RequestError) UserFailure() UserFailure {
	if !e.OnBehalfOf || e.StatusCode < 400 || e.StatusCode > 499 ||
		e.StatusCode == http.StatusRequestTimeout || e.StatusCode == http.StatusTooManyRequests {
		return NotUserFailure
	}
	switch e.Code {
	case "invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type":
		return NotUserFailure
	}
	found := map[UserFailure]bool{}
	for _, code := range e.ErrorCodes {
		if known, ok := aadstsCodes[code]; ok {
			found[known.user] = true
		}
	}
	switch {
	case found[ConsentRequired], e.Code == "consent_required", e.SubError == "consent_required":
		return ConsentRequired
	case found[InteractionRequired], e.Code == "interaction_required", e.Claims != "":
		return InteractionRequired
	case found[UserTokenInvalid], !found[NotUserFailure] && (e.Code == "invalid_grant" || e.Code == "invalid_request"):
		return UserTokenInvalid
	}
	return NotUserFailure
}
