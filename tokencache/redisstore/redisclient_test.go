package redisstore

import (
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

func TestRedisOptionsModes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"url and addrs", Options{URL: "redis://127.0.0.1:1", Addrs: []string{"127.0.0.1:1"}}, "both set"},
		{"neither", Options{}, "neither"},
		{"cluster db", Options{Addrs: []string{"a:1", "b:1"}, DB: 2}, "db 0 only"},
		{"empty addr", Options{Addrs: []string{""}}, "addrs[0]"},
		{"master name with url", Options{URL: "redis://127.0.0.1:1", MasterName: "m"}, "master_name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "tokencache: ") {
				t.Errorf("New() error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}

	mr := miniredis.RunT(t)
	mr.RequireUserAuth("app", "pw")
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"addrs", Options{Addrs: []string{mr.Addr()}, Username: "app", Password: "pw"}},
		{"url with password override", Options{URL: "redis://app:wrong@" + mr.Addr(), Password: "pw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, err := New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			if err := store.Ping(t.Context()); err != nil {
				t.Fatal(err)
			}
			if _, ok := store.Client().(*redis.Client); !ok {
				t.Errorf("client is %T, want standalone for one address", store.Client())
			}
		})
	}
	cluster, err := New(Options{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	if _, ok := cluster.Client().(*redis.ClusterClient); !ok {
		t.Errorf("client is %T, want a cluster client for several addresses", cluster.Client())
	}
}

// TestDBOverridesTheURLsOnlyWhenNotZero: DB 0 is no DB (an int cannot tell
// them apart), so it leaves the URL's /db in force, as Options.URL and
// docs/redis.md say; any other DB overrides it.
func TestDBOverridesTheURLsOnlyWhenNotZero(t *testing.T) {
	for _, tc := range []struct {
		url        string
		db, wantDB int
	}{
		{"redis://127.0.0.1:6379/3", 0, 3},
		{"redis://127.0.0.1:6379/3", 5, 5},
		{"redis://127.0.0.1:6379", 5, 5},
		{"redis://127.0.0.1:6379/0", 0, 0},
	} {
		client, err := Options{URL: tc.url, DB: tc.db}.newClient()
		if err != nil {
			t.Fatal(err)
		}
		if got := client.(*redis.Client).Options().DB; got != tc.wantDB {
			t.Errorf("%s with DB %d: the client uses db %d, want %d", tc.url, tc.db, got, tc.wantDB)
		}
		_ = client.Close()
	}
}
