package tokencache

import (
	"crypto/rand"
	_ "embed"
	"encoding/hex"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed unlock.lua
	unlockLua string
	//go:embed extend.lua
	extendLua string
)

var (
	// unlockScript is the compare-and-delete that releases a lock (and,
	// given a record's stored value, deletes a record only if unchanged);
	// Run sends EVALSHA and falls back to EVAL when the server does not
	// have it cached.
	unlockScript = redis.NewScript(unlockLua)
	// extendScript is the compare-and-PEXPIRE that extends a held lock.
	extendScript = redis.NewScript(extendLua)
)

// ownerTokenBytes is the size of the random lock owner token.
const ownerTokenBytes = 16

// newOwner returns a random lock owner token: 16 bytes from crypto/rand,
// hex-encoded.
func newOwner() string {
	b := make([]byte, ownerTokenBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return hex.EncodeToString(b)
}
