package binding

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

// RedisScope is the scope of Azure Redis passwords.
const RedisScope = "https://redis.azure.com/.default"

// RedisCredentials gives new Redis connections the identity's token as the
// password and its oid as the user name. The token is cached in process
// (never in the store), renewed under minLeft, kept while valid on failure.
type RedisCredentials struct {
	client  *entra.Client
	minLeft time.Duration

	mu    sync.Mutex // one token request at a time
	token *entra.Token
	user  string
}

// NewRedisCredentials returns client's credentials, each token with more
// than minLeft left.
func NewRedisCredentials(client *entra.Client, minLeft time.Duration) *RedisCredentials {
	return &RedisCredentials{client: client, minLeft: minLeft}
}

// Credentials returns a new connection's user name and password; errors
// never hold a token or secret.
func (r *RedisCredentials) Credentials(ctx context.Context) (username, password string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.token != nil && time.Until(r.token.ExpiresAt) > r.minLeft {
		return r.user, r.token.AccessToken, nil
	}
	token, err := r.client.Token(ctx, []string{RedisScope})
	if err != nil {
		if r.token != nil && time.Until(r.token.ExpiresAt) > 0 {
			return r.user, r.token.AccessToken, nil
		}
		return "", "", fmt.Errorf("redis entra: requesting a token for %s: %w", RedisScope, err)
	}
	claims, ok := entra.ReadPublicClaims(token.AccessToken)
	if !ok || claims.ObjectID == "" {
		return "", "", errors.New("redis entra: the token names no object ID (oid), which is the Redis user name")
	}
	r.token, r.user = token, claims.ObjectID
	return r.user, r.token.AccessToken, nil
}
