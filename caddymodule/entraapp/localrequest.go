package entraapp

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// A web page on this machine reaches 127.0.0.1 by rebinding its DNS name
// (its name in Host) or by a cross-site request (Origin, Sec-Fetch-Site):
// every handler refuses both before any token is looked up.

// CodeRequestNotLocal answers a request that may come from a web page.
const CodeRequestNotLocal = "MICROSOFT_REQUEST_NOT_LOCAL"

// The reasons NotLocal gives: fixed texts, never request data.
const (
	NotLocalHost = "the Host is not an IP address, localhost, *.localhost or a name listed in the entra " +
		"hosts option (a DNS name may be a web page that rebound it to this machine): an application that " +
		"calls the sidecar by another name, such as a Docker Compose service name, lists it in hosts"
	NotLocalBrowser = "the request carries Origin or a cross-site Sec-Fetch-Site header: a web page sent it, " +
		"and web pages never get the sidecar's tokens"
)

// checkHosts checks the hosts option's DNS names and returns them
// lowercased, as a set.
func checkHosts(entries []string) (map[string]struct{}, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	set := make(map[string]struct{}, len(entries))
	for i, entry := range entries {
		name := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(entry)), ".")
		if reason := hostEntryProblem(name); reason != "" {
			return nil, ConfigError(fmt.Sprintf("hosts[%d]", i), reason)
		}
		set[name] = struct{}{}
	}
	return set, nil
}

// hostEntryProblem says what is wrong with a lowercased hosts entry, or "".
func hostEntryProblem(name string) string {
	switch _, ipErr := netip.ParseAddr(strings.Trim(name, "[]")); {
	case name == "":
		return "an entry must not be empty"
	case strings.Contains(name, "://"):
		return "must be a host name, without a scheme (e.g. sidecar, not http://sidecar)"
	case strings.Contains(name, "*"):
		return "wildcards are not supported: list each name (*.localhost is always accepted)"
	case ipErr == nil:
		return "IP addresses are always accepted: list DNS names only"
	case strings.ContainsAny(name, ":[]"):
		return "must be a host name, without a port (the port is never compared)"
	case len(name) > 253:
		return "is longer than a DNS name can be (253 characters)"
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return "is not a DNS name (empty or over-long label)"
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "is not a DNS name: only letters, digits, '-', '_' and '.' are allowed"
			}
		}
	}
	return ""
}

// isLocalHost reports whether a Host (its port ignored) is empty, an IP
// literal, localhost, *.localhost or one of hosts. It allocates nothing
// for a lowercase Host.
func isLocalHost(hostport string, hosts map[string]struct{}) bool {
	host := hostport
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		if strings.Count(host, ":") == 1 || strings.HasPrefix(host, "[") {
			host = host[:i] // host:port or [v6]:port; a bare v6 address has several colons
		}
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	if host == "" {
		return true
	}
	if mayBeIP(host) {
		if _, err := netip.ParseAddr(host); err == nil {
			return true
		}
	}
	host = strings.ToLower(host)
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	_, listed := hosts[host]
	return listed
}

// mayBeIP reports whether host could be an IP literal, so that a DNS name
// is not parsed: a failed parse allocates, on the proxy's hot path.
func mayBeIP(host string) bool {
	if strings.IndexByte(host, ':') >= 0 {
		return true
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// fromBrowser reports whether r carries Origin (any value), or
// Sec-Fetch-Site other than same-origin and none (a person typing a URL).
func fromBrowser(r *http.Request) bool {
	if _, ok := r.Header["Origin"]; ok {
		return true
	}
	for _, site := range r.Header["Sec-Fetch-Site"] {
		site = strings.TrimSpace(site)
		if !strings.EqualFold(site, "same-origin") && !strings.EqualFold(site, "none") {
			return true
		}
	}
	return false
}

// NotLocal returns why r may come from a web page (NotLocalBrowser, then
// NotLocalHost), or "".
func (a *App) NotLocal(r *http.Request) string {
	if fromBrowser(r) {
		return NotLocalBrowser
	}
	if !isLocalHost(r.Host, a.hosts) {
		return NotLocalHost
	}
	return ""
}

// IsLocalPeer reports whether the TCP peer is on loopback, or the request
// came over a Unix socket.
func IsLocalPeer(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err == nil {
		ip := net.ParseIP(host)
		return ip != nil && ip.IsLoopback()
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return ok && strings.HasPrefix(local.Network(), "unix")
}

// RefuseNotLocal answers 403 MICROSOFT_REQUEST_NOT_LOCAL with reason,
// logging the peer's address (nothing the client sent) as
// LogBrowserRefusal allows.
func (a *App) RefuseNotLocal(w http.ResponseWriter, r *http.Request, logger *zap.Logger, directive, reason string) error {
	if ok, unlogged := a.LogBrowserRefusal(); ok && logger != nil {
		logger.Warn("refused a request that may come from a web page", zap.String("directive", directive),
			zap.String("remote_addr", r.RemoteAddr), zap.Int64("refused_unlogged_since_last", unlogged))
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	return Answer{Status: http.StatusForbidden, Code: CodeRequestNotLocal, Message: reason}.Write(w)
}

// LogBrowserRefusal reports whether a refusal a web page can cause at will
// may be logged now, and how many were not since the last.
func (a *App) LogBrowserRefusal() (bool, int64) {
	if a == nil {
		return true, 0
	}
	return a.refusals.Allow(time.Now())
}

// refusalLogInterval is how often such a refusal is logged (the metrics
// count them all).
const refusalLogInterval = time.Minute

// RefusalLog lets one entry through per refusalLogInterval (a minute), so
// a web page or a peer cannot flood the log; a nil RefusalLog allows every
// entry. Its zero value is ready.
type RefusalLog struct {
	last     atomic.Int64 // UnixNano of the last entry let through; 0: none
	unlogged atomic.Int64
}

// Allow reports whether an entry may be logged at now, and how many were
// not since the last one let through.
func (l *RefusalLog) Allow(now time.Time) (bool, int64) {
	if l == nil {
		return true, 0
	}
	last := l.last.Load()
	if (last != 0 && now.UnixNano()-last < int64(refusalLogInterval)) || !l.last.CompareAndSwap(last, now.UnixNano()) {
		l.unlogged.Add(1)
		return false, 0
	}
	return true, l.unlogged.Swap(0)
}
