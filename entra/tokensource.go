package entra

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// tokenSource is where a Client's tokens come from: a credential presented
// to a token endpoint, or the host's managed identity.
type tokenSource interface {
	// newRequest builds the request of tr and returns the secrets it
	// carries, which no error may echo; a *RequestError when no credential
	// could be had.
	newRequest(ctx context.Context, tr tokenRequest) (req *http.Request, secrets []string, err error)
	// parse turns the answer into a Token or a *RequestError (parseAnswer).
	parse(status int, header http.Header, body []byte, sentAt time.Time, r *redactor) (*Token, error)
	kind() string // for CredentialType
	// fingerprint is for CredentialFingerprint: a digest or a name, never
	// the secret, and how the credential is presented when not by default.
	fingerprint() string
	// cacheKeyLines are what CacheKey adds after the client ID.
	cacheKeyLines() []string
}

// tokenRequest is one token request. A managed identity reads only the
// scope.
type tokenRequest struct {
	endpoint string     // the client's token endpoint, or the user's tenant's for OBO
	scope    string     // the scopes joined by spaces
	grant    url.Values // grant_type and the grant's fields (assertion, requested_token_use, claims)
}

// formCredential is what the client secret, certificate and federated
// token credentials share: a form POSTed to a token endpoint.
type formCredential struct {
	clientID    string
	extraParams map[string]string
}

// post builds the request of tr: the extra parameters, then client_id,
// scope, the grant's fields and the credential's fields auth, each
// overriding the earlier.
func (g formCredential) post(ctx context.Context, tr tokenRequest, auth url.Values) (*http.Request, error) {
	form := url.Values{}
	for name, value := range g.extraParams {
		form.Set(name, value)
	}
	for _, fields := range []url.Values{{"client_id": {g.clientID}, "scope": {tr.scope}}, tr.grant, auth} {
		maps.Copy(form, fields)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tr.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &RequestError{Err: fmt.Errorf("building request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req, nil
}

// postAssertion is post authenticated by a JWT client assertion (RFC 7523),
// masked in errors as assertionSecrets says.
func (g formCredential) postAssertion(ctx context.Context, tr tokenRequest, assertion string) (*http.Request, []string, error) {
	req, err := g.post(ctx, tr, url.Values{
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	})
	return req, assertionSecrets(assertion), err
}

func (formCredential) parse(status int, header http.Header, body []byte, sentAt time.Time, r *redactor) (*Token, error) {
	return parseAnswer(status, header, body, sentAt, r, expiresInLifetime)
}

func (formCredential) cacheKeyLines() []string { return nil }
