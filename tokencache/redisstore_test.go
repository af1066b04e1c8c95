package tokencache_test

import (
	"github.com/caddy-entra/caddy-entra/tokencache"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
)

// The engine's tests on Redis get their stores here: redisstore imports
// tokencache, so only this external test package can import it.
func init() {
	tokencache.SetNewRedisStore(func(o tokencache.RedisTestOptions) (tokencache.RedisTestStore, error) {
		store, err := redisstore.New(redisstore.Options{URL: o.URL, KeyPrefix: o.KeyPrefix,
			OpTimeout: o.OpTimeout, EncryptionKeys: o.EncryptionKeys})
		if err != nil {
			return nil, err
		}
		return store, nil
	})
}
