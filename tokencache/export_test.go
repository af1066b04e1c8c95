package tokencache

// Exported for redisstore_test.go (package tokencache_test).
type (
	RedisTestStore   = redisTestStore
	RedisTestOptions = redisOptions
)

// SetNewRedisStore sets the engine tests' newRedisStore.
func SetNewRedisStore(f func(RedisTestOptions) (RedisTestStore, error)) { newRedisStore = f }
