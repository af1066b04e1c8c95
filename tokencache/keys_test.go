package tokencache

import (
	"regexp"
	"strings"
	"testing"
)

func TestRecordKey(t *testing.T) {
	base := Application{Name: "graph-api", CacheKey: testCacheKey, Scopes: []string{"b", "a"}}
	key := RecordKey("entra:", base)
	if !regexp.MustCompile(`^entra:\{[0-9a-f]{32}\}:token$`).MatchString(key) {
		t.Fatalf("RecordKey() = %q, want entra:{32 hex}:token", key)
	}
	lock := LockKey(key)
	if lock != strings.TrimSuffix(key, ":token")+":lock" {
		t.Errorf("LockKey() = %q, want the record's hash tag with :lock", lock)
	}

	for _, tc := range []struct {
		name string
		app  Application
		same bool
	}{
		{"other name", Application{Name: "alias", CacheKey: testCacheKey, Scopes: []string{"b", "a"}}, true},
		{"scopes reordered", Application{Name: "x", CacheKey: testCacheKey, Scopes: []string{"a", "b"}}, true},
		{"scope repeated", Application{Name: "x", CacheKey: testCacheKey, Scopes: []string{"a", "b", "a"}}, true},
		{"other tenant", Application{Name: "graph-api", CacheKey: strings.Replace(testCacheKey, "tenant-1\n", "tenant-2\n", 1), Scopes: []string{"a", "b"}}, false},
		{"other client", Application{Name: "graph-api", CacheKey: strings.Replace(testCacheKey, "client-1", "client-2", 1), Scopes: []string{"a", "b"}}, false},
		{"other scopes", Application{Name: "graph-api", CacheKey: testCacheKey, Scopes: []string{"a"}}, false},
		// The separator keeps identity and scopes apart.
		{"shifted boundary", Application{Name: "graph-api", CacheKey: testCacheKey + "\nb", Scopes: []string{"a"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RecordKey("entra:", tc.app); (got == key) != tc.same {
				t.Errorf("RecordKey() = %q vs %q, same = %v, want %v", got, key, got == key, tc.same)
			}
		})
	}
	if RecordKey("other:", base) == key {
		t.Error("the prefix does not change the key")
	}
}
