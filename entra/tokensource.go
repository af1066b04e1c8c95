package entra

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// tokenSource is where a Client's tokens come from: a credential presented
// to a token endpoint (a client secret, a certificate, a federated token
// file) or the host's managed identity. Client.Token and Client.OnBehalfOf
// ask it for the request, send it, and have it read the answer.
type tokenSource interface {
	// newRequest builds the HTTP request of tr, bounded by ctx. It returns
	// the secret values the request carries, which no error may echo, or a
	// *RequestError when no credential could be had.
	newRequest(ctx context.Context, tr tokenRequest) (req *http.Request, secrets []string, err error)
	// parse turns the answer into a Token or a *RequestError, masking r's
	// secrets in the error's fields before cutting them to length.
	parse(status int, header http.Header, body []byte, sentAt time.Time, r *redactor) (*Token, error)
	// kind is the source's name for CredentialType.
	kind() string
	// fingerprint identifies the credential in use now (see
	// Client.CredentialFingerprint): a digest or a name, never the secret.
	fingerprint() string
	// cacheKeyLines returns the lines Client.CacheKey adds after the
	// endpoint, tenant and client ID: none for a credential sent to a token
	// endpoint.
	cacheKeyLines() []string
}

// tokenRequest is one token request: the grant's own form fields, the
// scope, and the token endpoint it goes to. A managed identity reads only
// the scope (and is never asked for another grant).
type tokenRequest struct {
	endpoint string     // the client's token endpoint, or the user's tenant's for OBO
	scope    string     // the scopes joined by spaces
	grant    url.Values // grant_type and the grant's fields (assertion, requested_token_use, claims)
}

// clientAssertionType is the client_assertion_type of a JWT client
// assertion (RFC 7523), for certificates and federated tokens alike.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// formCredential is what the client secret, certificate and federated
// token credentials share: a form POSTed to a token endpoint, answered as
// Entra's token endpoint does.
type formCredential struct {
	clientID    string
	extraParams map[string]string
}

// post builds the request of tr: client_id, scope, the extra parameters,
// the grant's fields and the credential's fields auth, the later ones
// overriding the earlier.
func (g formCredential) post(ctx context.Context, tr tokenRequest, auth url.Values) (*http.Request, error) {
	form := url.Values{}
	for name, value := range g.extraParams {
		form.Set(name, value)
	}
	for _, fields := range []url.Values{{"client_id": {g.clientID}, "scope": {tr.scope}}, tr.grant, auth} {
		for name, values := range fields {
			form[name] = values
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tr.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		// The endpoint was validated by NewClient; this is not expected.
		return nil, &RequestError{Err: fmt.Errorf("building request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req, nil
}

// postAssertion is post authenticated by a JWT client assertion (RFC 7523),
// for certificates and federated tokens alike.
func (g formCredential) postAssertion(ctx context.Context, tr tokenRequest, assertion string) (*http.Request, []string, error) {
	req, err := g.post(ctx, tr, url.Values{
		"client_assertion_type": {clientAssertionType},
		"client_assertion":      {assertion},
	})
	return req, []string{assertion}, err
}

func (formCredential) parse(status int, header http.Header, body []byte, sentAt time.Time, r *redactor) (*Token, error) {
	return parseAnswer(status, header, body, sentAt, r, expiresInLifetime)
}

func (formCredential) cacheKeyLines() []string { return nil }
