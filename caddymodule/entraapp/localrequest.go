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

// This file keeps web pages away from the sidecar. A page in a browser on
// the same machine can reach 127.0.0.1 in two ways: by rebinding its own DNS
// name to it (the request then carries the page's name in Host), and by
// sending a cross-site request (which carries Origin, and in current
// browsers Sec-Fetch-Site). entra_token, entra_ready and
// entra_token_endpoint refuse both, before any token is looked up.

// CodeRequestNotLocal is the code entra_token and entra_ready answer a
// request with when it may come from a web page: a Host that is not a local
// name nor listed in the entra app's hosts option, an Origin header, or
// Sec-Fetch-Site cross-site or same-site.
const CodeRequestNotLocal = "MICROSOFT_REQUEST_NOT_LOCAL"

// The reasons a request is taken for a web page's (see NotLocal); fixed
// texts, never request data.
const (
	NotLocalHost = "the Host is not an IP address, localhost, *.localhost or a name listed in the entra " +
		"hosts option (a DNS name may be a web page that rebound it to this machine): an application that " +
		"calls the sidecar by another name, such as a Docker Compose service name, lists it in hosts"
	NotLocalBrowser = "the request carries Origin or a cross-site Sec-Fetch-Site header: a web page sent it, " +
		"and web pages never get the sidecar's tokens"
)

// checkHosts checks the entries of the hosts option and returns them as a
// set of lowercase names. An entry is a DNS name: no port, scheme, path or
// wildcard; IP addresses, localhost and *.localhost are always accepted and
// need no entry.
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
	switch {
	case name == "":
		return "an entry must not be empty"
	case strings.Contains(name, "://"):
		return "must be a host name, without a scheme (e.g. sidecar, not http://sidecar)"
	case strings.Contains(name, "*"):
		return "wildcards are not supported: list each name (*.localhost is always accepted)"
	case strings.ContainsAny(name, ":[]"):
		if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
			return "IP addresses are always accepted: list DNS names only"
		}
		return "must be a host name, without a port (the port is never compared)"
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return "IP addresses are always accepted: list DNS names only"
	}
	if len(name) > 253 {
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

// isLocalHost reports whether a Host header names this machine as a local
// client would: an IP literal, localhost or a *.localhost name, or nothing;
// or a name of hosts (lowercase, as checkHosts makes it). The port is not
// compared. It allocates nothing for a lowercase Host.
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

// mayBeIP reports whether host could be an IP literal (IPv6 has a colon;
// IPv4 is digits and dots), so that a DNS name is not parsed: a failed
// parse allocates its error, and this is the proxy's hot path.
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

// fromBrowser reports whether a request carries what browsers add to a web
// page's request: Origin (any value, "null" too), or Sec-Fetch-Site other
// than same-origin and none (cross-site, same-site, or a value unknown
// today). same-origin and none (typed in the address bar) pass: a page the
// sidecar itself serves and a person are not an attack.
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
// NotLocalHost), or "" when it does not: see CodeRequestNotLocal.
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

// RefuseNotLocal answers 403 {"code": "MICROSOFT_REQUEST_NOT_LOCAL",
// "message": reason}, logging the peer's address (nothing the client sent)
// as LogBrowserRefusal allows.
func (a *App) RefuseNotLocal(w http.ResponseWriter, r *http.Request, logger *zap.Logger, directive, reason string) error {
	if ok, unlogged := a.LogBrowserRefusal(); ok && logger != nil {
		logger.Warn("refused a request that may come from a web page", zap.String("directive", directive),
			zap.String("remote_addr", r.RemoteAddr), zap.Int64("refused_unlogged_since_last", unlogged))
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	return Answer{Status: http.StatusForbidden, Code: CodeRequestNotLocal, Message: reason}.Write(w)
}

// LogBrowserRefusal is refusalLog.allow of the app, now: whether a refusal
// a web page can cause at will may be logged, and how many were not.
func (a *App) LogBrowserRefusal() (bool, int64) {
	if a == nil {
		return true, 0
	}
	return a.refusals.allow(time.Now())
}

// refusalLogInterval is how often a refusal that a web page can cause at
// will is logged: at most once a minute per app; every refusal is counted
// in the metrics all the same.
const refusalLogInterval = time.Minute

// refusalLog keeps a web page from flooding the log with refusals: allow
// lets one entry through per refusalLogInterval and reports how many were
// not logged since the last. A nil refusalLog allows every entry.
type refusalLog struct {
	last     atomic.Int64 // UnixNano of the last entry let through; 0: none
	unlogged atomic.Int64
}

// allow reports whether a refusal at now is logged, and if so how many
// were not since the last one that was.
func (l *refusalLog) allow(now time.Time) (bool, int64) {
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
