package tokencache

import (
	"crypto/rand"
	_ "embed"
	"encoding/hex"

	"github.com/redis/go-redis/v9"
)

//go:embed unlock.lua
var unlockLua string

// unlockScript is the compare-and-delete that releases a lock; Run sends
// EVALSHA and falls back to EVAL when the server does not have it cached.
var unlockScript = redis.NewScript(unlockLua)

// ownerTokenBytes is the size of the random lock owner token.
const ownerTokenBytes = 16

// newOwner returns a random lock owner token: 16 bytes from crypto/rand,
// hex-encoded.
func newOwner() string {
	b := make([]byte, ownerTokenBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return hex.EncodeToString(b)
}
