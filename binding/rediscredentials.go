package binding

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
)

// RedisScope is the scope of Azure Redis passwords.
const RedisScope = "https://redis.azure.com/.default"

// RedisCredentials gives new Redis connections the identity's token as the
// password and its oid as the user name. The token is cached in process
// (never in the store), renewed under minLeft (under half its lifetime when
// that is shorter, so that a short-lived token is not requested again for
// each new connection), kept while valid on failure.
// go-redis asks for it while opening a connection, under the deadline of
// the Redis call that needed one (OpTimeout): the token request runs apart,
// one at a time and bounded by the client's own timeout, and a failed one
// is not repeated before a backoff of 1 s, doubling up to 1 min (longer
// when the endpoint's Retry-After says so, up to 1 min). Each
// failed request is logged as a warning, and the success after failures.
type RedisCredentials struct {
	client  *entra.Client
	minLeft time.Duration
	logger  *zap.Logger

	mu      sync.Mutex
	token   *entra.Token
	user    string
	renewAt time.Time // ExpiresAt less minLeft, or half the lifetime when shorter
	retry             // its request renews the token
}

// NewRedisCredentials returns client's credentials, each token renewed
// once it has minLeft or less left (or half its lifetime, when shorter);
// logger is told of failed requests.
func NewRedisCredentials(client *entra.Client, minLeft time.Duration, logger *zap.Logger) *RedisCredentials {
	return &RedisCredentials{client: client, minLeft: minLeft, logger: logger}
}

// Credentials returns a new connection's user name and password: a valid
// token at once (starting its renewal when it is due), else
// after the request in flight, waiting no longer than ctx. Errors never
// hold a token or secret.
func (r *RedisCredentials) Credentials(ctx context.Context) (username, password string, err error) {
	r.mu.Lock()
	if r.valid() {
		if !now().Before(r.renewAt) {
			r.start(r.request)
		}
		username, password = r.user, r.token.AccessToken
		r.mu.Unlock()
		return username, password, nil
	}
	renewal, err := r.start(r.request), r.err
	r.mu.Unlock()
	if renewal == nil {
		return "", "", err
	}
	select {
	case <-renewal:
	case <-ctx.Done():
		return "", "", fmt.Errorf("redis entra: waiting for a token for %s: %w", RedisScope, ctx.Err())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.valid() {
		return r.user, r.token.AccessToken, nil
	}
	return "", "", cmp.Or(r.err, errors.New("redis entra: the token expired before the connection used it"))
}

// valid reports whether the token has not expired. r.mu is held.
func (r *RedisCredentials) valid() bool {
	return r.token != nil && now().Before(r.token.ExpiresAt)
}

// request asks for a token, not bound to the Redis call that needed one,
// keeps it or the failure, and closes done.
func (r *RedisCredentials) request(done chan struct{}) {
	defer close(done)
	token, err := r.client.Token(context.Background(), []string{RedisScope})
	var user string
	if err != nil {
		err = fmt.Errorf("redis entra: requesting a token for %s: %w", RedisScope, err)
	} else if claims, ok := entra.ReadPublicClaims(token.AccessToken); !ok || claims.ObjectID == "" {
		err = errors.New("redis entra: the token names no object ID (oid), which is the Redis user name")
	} else if !now().Before(token.ExpiresAt) {
		err = errors.New("redis entra: the token had expired when it arrived")
	} else {
		user = claims.ObjectID
	}
	r.mu.Lock()
	recovered := false
	var lifetime time.Duration // of the token received
	if err != nil {
		var re *entra.RequestError
		var retryAfter time.Duration // throttled: at least as long
		if errors.As(err, &re) {
			retryAfter = re.RetryAfter
		}
		r.fail(err, retryAfter)
	} else {
		lifetime = token.ExpiresAt.Sub(now())
		r.token, r.user = token, user
		r.renewAt = token.ExpiresAt.Add(-min(r.minLeft, lifetime/2))
		recovered = r.succeed() > 0
	}
	valid, retryIn := r.valid(), r.wait
	r.mu.Unlock()
	// Logged unlocked (new connections do not wait on it), before done.
	switch {
	case err != nil:
		r.logger.Warn("requesting the token Redis authenticates with failed; new Redis connections use the current token while it is valid",
			append(RequestErrorFields(err), zap.Bool("token_valid", valid), zap.Duration("retry_in", retryIn))...)
	case recovered:
		r.logger.Info("requested the token Redis authenticates with after failures")
	}
	if err == nil && lifetime < 2*r.minLeft {
		r.logger.Warn("the token Redis authenticates with lives less than four times max_connection_age: its renewal starts with less than twice max_connection_age left, and a connection made while it runs can outlive it; lower max_connection_age",
			zap.Duration("token_lifetime", lifetime), zap.Duration("max_connection_age", r.minLeft/2))
	}
}
