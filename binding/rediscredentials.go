package binding

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

// RedisScope is the scope of the tokens Azure Cache for Redis and Azure
// Managed Redis accept as passwords.
const RedisScope = "https://redis.azure.com/.default"

// RedisCredentials gives new Redis connections a user name and password
// from Entra ID: the password a token of the identity for RedisScope, the
// user name the token's oid. Its token is cached here, in the process,
// never in the store it opens, and replaced when less than MinLeft is
// left; a failed request keeps a token that is still valid.
type RedisCredentials struct {
	client  *entra.Client
	minLeft time.Duration

	mu    sync.Mutex // one token request at a time
	token *entra.Token
	user  string
}

// NewRedisCredentials returns the credentials of client's identity; each
// token given to a connection has more than minLeft left.
func NewRedisCredentials(client *entra.Client, minLeft time.Duration) *RedisCredentials {
	return &RedisCredentials{client: client, minLeft: minLeft}
}

// Credentials returns the user name and password of a new connection. Its
// errors never hold a token or a secret.
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
