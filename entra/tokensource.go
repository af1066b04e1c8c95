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
// file) or the host's managed identity. Client.Token asks it for the
// request, sends it, and has it read the answer.
type tokenSource interface {
	// newRequest builds the request for a token for scope (the scopes
	// joined by spaces), bounded by ctx. It returns the secret values the
	// request carries, which no error may echo, or a *RequestError when no
	// credential could be had.
	newRequest(ctx context.Context, scope string) (req *http.Request, secrets []string, err error)
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

// clientAssertionType is the client_assertion_type of a JWT client
// assertion (RFC 7523), for certificates and federated tokens alike.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// clientCredentialsGrant is what the client secret, certificate and
// federated token credentials share: an OAuth 2.0 client-credentials form
// POSTed to the token endpoint, answered as Entra's token endpoint does.
type clientCredentialsGrant struct {
	endpoint    string
	clientID    string
	extraParams map[string]string
}

// post builds the request for scope: client_id, scope, grant_type, the
// extra parameters and the credential's fields auth.
func (g clientCredentialsGrant) post(ctx context.Context, scope string, auth url.Values) (*http.Request, error) {
	form := url.Values{
		"client_id":  {g.clientID},
		"scope":      {scope},
		"grant_type": {"client_credentials"},
	}
	for name, value := range g.extraParams {
		form.Set(name, value)
	}
	for name, values := range auth {
		form[name] = values
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		// The endpoint was validated by NewClient; this is not expected.
		return nil, &RequestError{Err: fmt.Errorf("building request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req, nil
}

// postAssertion is post authenticated by a JWT client assertion (RFC 7523),
// for certificates and federated tokens alike.
func (g clientCredentialsGrant) postAssertion(ctx context.Context, scope, assertion string) (*http.Request, []string, error) {
	req, err := g.post(ctx, scope, url.Values{
		"client_assertion_type": {clientAssertionType},
		"client_assertion":      {assertion},
	})
	return req, []string{assertion}, err
}

func (clientCredentialsGrant) parse(status int, header http.Header, body []byte, sentAt time.Time, r *redactor) (*Token, error) {
	return parseTokenResponse(status, header, body, sentAt, r)
}

func (clientCredentialsGrant) cacheKeyLines() []string { return nil }
