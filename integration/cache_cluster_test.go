package integration

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest/observer"
)

// startRedisCluster starts 3 cluster-enabled redis-server nodes, joins them
// with redis-cli --cluster create, and waits for cluster_state:ok. It
// returns their addresses.
func startRedisCluster(t *testing.T) []string {
	t.Helper()
	cli := lookPathOrSkip(t, "redis-cli")
	dir := t.TempDir()
	var addrs []string
	for i := range 3 {
		port := freePort(t)
		startRedisOnPort(t, port, dir, "--cluster-enabled", "yes",
			"--cluster-config-file", fmt.Sprintf("%s/nodes-%d.conf", dir, i), "--cluster-node-timeout", "5000")
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", port))
	}
	create := exec.Command(cli, append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...)
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, addr := range addrs {
		node := redis.NewClient(&redis.Options{Addr: addr})
		waitFor(t, "cluster_state:ok on "+addr, 20*time.Second, func() error {
			info, err := node.ClusterInfo(context.Background()).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("cluster not ready")
			}
			return nil
		})
		node.Close()
	}
	return addrs
}

// TestCacheClusterFetchesOnce runs 3 caches on a 3-node Redis Cluster: 3 ×
// 300 concurrent cold calls make one fetch (the lock, record and update
// channel of one record share a slot: a CROSSSLOT error would fail the
// scripts), and a Retry-After backoff is shared through the cluster.
func TestCacheClusterFetchesOnce(t *testing.T) {
	addrs := startRedisCluster(t)
	const replicas, callers = 3, 300
	var calls, failingCalls atomic.Int64
	release := make(chan struct{})
	fetch := func(ctx context.Context) (tokencache.Fetched, error) {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return tokencache.Fetched{}, ctx.Err()
		}
		return tokencache.Fetched{AccessToken: "cluster-token", ExpiresAt: time.Now().Add(time.Hour)}, nil
	}
	throttled := func(context.Context) (tokencache.Fetched, error) {
		failingCalls.Add(1)
		return tokencache.Fetched{}, &throttledError{retryAfter: time.Minute}
	}
	var caches []*replicaCache
	var logs []*observer.ObservedLogs
	var client redis.UniversalClient
	for range replicas {
		c, store, l := newReplicaCache(t, redisstore.Options{Addrs: addrs, KeyPrefix: "cluster:", OpTimeout: countingOpTimeout},
			tokencache.Options{PollInterval: 10 * time.Second, WaitTimeout: 20 * time.Second},
			cacheApp("graph-api", "https://graph.microsoft.com/.default", fetch),
			cacheApp("throttled-api", "api://throttled/.default", throttled))
		if _, ok := store.Client().(*redis.ClusterClient); !ok {
			t.Fatalf("client is %T, want a cluster client", store.Client())
		}
		if err := store.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		client = store.Client()
		caches = append(caches, c)
		logs = append(logs, l)
	}
	defer logWarnings(t, logs)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg, started sync.WaitGroup
	started.Add(replicas * callers)
	errs := make(chan error, replicas*callers)
	for _, c := range caches {
		for range callers {
			wg.Go(func() {
				started.Done()
				rec, err := c.Token(ctx, "graph-api")
				if err == nil && rec.AccessToken != "cluster-token" {
					err = fmt.Errorf("got another token")
				}
				if err != nil {
					errs <- err
				}
			})
		}
	}
	started.Wait()
	time.Sleep(100 * time.Millisecond)
	releasedAt := time.Now()
	close(release)
	wg.Wait()
	settle := time.Since(releasedAt)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d fetches for %d replicas × %d cold calls on the cluster, want 1", n, replicas, callers)
	}
	if settle > 5*time.Second {
		t.Errorf("losers took %v after the write, want well under the 10s poll (pub/sub across nodes)", settle)
	}
	t.Logf("cluster: fetches=%d calls=%d settle-after-release=%v", calls.Load(), replicas*callers, settle)

	graphKey := tokencache.RecordKey("cluster:", cacheApp("", "https://graph.microsoft.com/.default", nil))
	if n, err := client.Exists(context.Background(), graphKey).Result(); err != nil || n != 1 {
		t.Errorf("record not in the cluster (%d, %v)", n, err)
	}
	if n, _ := client.Exists(context.Background(), tokencache.LockKey(graphKey)).Result(); n != 0 {
		t.Error("lock left in the cluster")
	}

	// A Retry-After from one replica stops the others.
	for i, c := range caches {
		for range 5 {
			if _, err := c.Token(ctx, "throttled-api"); err == nil {
				t.Fatalf("replica %d: throttled Token() = nil error", i)
			}
		}
	}
	if n := failingCalls.Load(); n != 1 {
		t.Errorf("%d throttled fetches across the cluster during the Retry-After, want 1", n)
	}
	backoffKey := tokencache.BackoffKey(tokencache.RecordKey("cluster:", cacheApp("", "api://throttled/.default", nil)))
	if ttl, err := client.PTTL(context.Background(), backoffKey).Result(); err != nil || ttl <= 0 || ttl > time.Minute+time.Second {
		t.Errorf("backoff key TTL %v, %v; want about a minute", ttl, err)
	}
}

// throttledError classifies itself as the entra package's errors do.
type throttledError struct{ retryAfter time.Duration }

func (e *throttledError) Error() string                 { return "token endpoint: 429 too many requests" }
func (e *throttledError) PermanentFailure() bool        { return false }
func (e *throttledError) RetryAfterHint() time.Duration { return e.retryAfter }
