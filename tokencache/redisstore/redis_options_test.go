package redisstore

import (
	"strings"
	"testing"
)

// TestKeyPrefixWithBracesIsRejected: a brace in the prefix would move the
// Redis Cluster hash tag, splitting a record from its lock, backoff and
// channel.
func TestKeyPrefixWithBracesIsRejected(t *testing.T) {
	for _, prefix := range []string{"entra{x}:", "{entra}:", "a{", "b}"} {
		_, err := New(Options{URL: "redis://127.0.0.1:1", KeyPrefix: prefix})
		if err == nil || !strings.Contains(err.Error(), "key_prefix") || !strings.HasPrefix(err.Error(), "tokencache: ") {
			t.Errorf("KeyPrefix %q: error %v, want one naming key_prefix", prefix, err)
		}
	}
	store, err := New(Options{URL: "redis://127.0.0.1:1", KeyPrefix: "team-a:entra:"})
	if err != nil {
		t.Fatalf("plain prefix: %v", err)
	}
	_ = store.Close()
}

// TestUnparsableRedisURLLeaksNothing: url.Parse quotes the URL or the bad
// escape (which can sit inside the password) in its errors; none of it
// may reach ours.
func TestUnparsableRedisURLLeaksNothing(t *testing.T) {
	for _, tc := range []struct {
		url    string
		pieces []string // none may appear in the error
		kind   string   // what the error says instead
	}{
		{"redis://:Sup3r%zzSecretPw@host:6379", []string{"Sup3r", "zz", "Secret", "host"}, "percent-escape"},
		{"redis://alice:Sup3rSecret%4@host:6379", []string{"Sup3r", "%4", "Secret", "alice"}, "percent-escape"},
		{"redis://:Sup3rSecretPw@host:port-x", []string{"Sup3r", "Secret", "port-x"}, "port"},
		{"redis://:Sup3r\x7fSecretPw@host", []string{"Sup3r", "Secret"}, "control character"},
		{"redis://:Sup3rSecretPw@ho st:6379", []string{"Sup3r", "Secret", "ho st"}, "host"},
	} {
		_, err := New(Options{URL: tc.url})
		if err == nil {
			t.Errorf("%q: no error", tc.url)
			continue
		}
		for _, piece := range tc.pieces {
			if strings.Contains(err.Error(), piece) {
				t.Errorf("error %q contains %q from the URL", err, piece)
			}
		}
		if !strings.Contains(err.Error(), tc.kind) || !strings.HasPrefix(err.Error(), "tokencache: parsing redis url: ") {
			t.Errorf("error %q, want it to say %q is malformed", err, tc.kind)
		}
	}
}

// TestSkipVerifyIsRefused: a rediss URL with skip_verify=true would take
// any server for Redis and hand it the password or the identity's token
// (redis entra); it is refused, naming the parameter and not the password.
func TestSkipVerifyIsRefused(t *testing.T) {
	for _, url := range []string{"rediss://:Sup3rSecretPw@127.0.0.1:6380?skip_verify=true", "rediss://127.0.0.1:6380/0?skip_verify=1"} {
		_, err := New(Options{URL: url})
		if err == nil || !strings.Contains(err.Error(), "skip_verify") || strings.Contains(err.Error(), "Sup3r") {
			t.Errorf("%s: error %v, want skip_verify refused without the password", url, err)
		}
	}
	store, err := New(Options{URL: "rediss://127.0.0.1:6380?skip_verify=false"})
	if err != nil {
		t.Fatalf("skip_verify=false: %v", err)
	}
	_ = store.Close()
}

// TestRedisURLErrorsQuoteNoneOfTheURL: a URL url.Parse takes can still hold
// an unencoded password in its path or query (after the first / or ?), which
// go-redis's errors quote; ours say the kind of fault instead.
func TestRedisURLErrorsQuoteNoneOfTheURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		kind string
	}{
		{"redis://:2024/Sup3rTail@host:6379/0", "invalid path (want /<db>; percent-encode / ? # and @ in the password)"},
		{"redis://default:2024/Sup3rTail@host:6379/0", "invalid path (want /<db>"},
		{"redis://:Sup3r@ss1/Sup3rTail@host:6379/0", "invalid path (want /<db>"},
		{"redis://:2024/Sup3rTail@host:6379", "invalid database number (want /<db> or db=<db>, a number"},
		{"redis://host:6379/0?db=Sup3rTail", "invalid database number"},
		{"redis://:2024?Sup3rTail@host:6379", "unknown query option"},
		{"redis://host:6379/0?dial_timeout=Sup3rTail", "query option dial_timeout: want a duration"},
		{"redis://host:6379/0?pool_size=Sup3rTail", "query option pool_size: want a number"},
		{"redis://host:6379/0?pool_fifo=Sup3rTail", "query option pool_fifo: want a boolean"},
		{"Sup3rUser:Sup3rPass@host:6379", "the scheme is not redis or rediss"}, // no redis://: the user is the scheme
		{"redis://admin:4711#Sup3rTail@host:6379/0", "a # in the url"},         // else: host admin:4711, logged
		{"redis://u:Sup3r#Tail@host:6379", "a # in the url"},                   // else: "invalid port", misleading
	} {
		_, err := New(Options{URL: tc.url})
		if err == nil {
			t.Errorf("%q: no error", tc.url)
			continue
		}
		if lower := strings.ToLower(err.Error()); strings.Contains(lower, "sup3r") || strings.Contains(lower, "host") {
			t.Errorf("%q: error %q quotes the URL", tc.url, err)
		}
		if !strings.HasPrefix(err.Error(), "tokencache: parsing redis url: "+tc.kind) {
			t.Errorf("%q: error %q, want it to say %q", tc.url, err, tc.kind)
		}
	}
}
