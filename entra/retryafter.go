package entra

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// longestDuration is the longest delay a Retry-After parses to, in whole
// seconds; the caller caps how long it obeys one.
const longestDuration = time.Duration(math.MaxInt64) / time.Second * time.Second

// parseRetryAfter reads a Retry-After header, delta-seconds or an HTTP-date:
// 0 when absent, malformed or past, longestDuration when too long to hold.
func parseRetryAfter(header http.Header, now time.Time) time.Duration {
	value := strings.TrimSpace(header.Get("Retry-After"))
	if value == "" {
		return 0
	}
	var d time.Duration
	if strings.Trim(value, "0123456789") == "" {
		secs, err := strconv.ParseUint(value, 10, 64)
		if err != nil || secs > uint64(longestDuration/time.Second) {
			return longestDuration // only overflow can fail: too many digits
		}
		d = time.Duration(secs) * time.Second
	} else if at, err := http.ParseTime(value); err == nil {
		// HTTP-dates have whole seconds; round up so the caller never
		// retries a fraction of a second too early.
		d = at.Sub(now) // saturates
		if rem := d % time.Second; rem > 0 {
			d = min(d-rem, longestDuration-time.Second) + time.Second
		}
	}
	return max(d, 0)
}
