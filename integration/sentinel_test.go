package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startSentinel starts a Redis Sentinel (redis-server --sentinel) watching
// the master at masterAddr under the name mymaster, and waits until it
// reports that master.
func startSentinel(t *testing.T, masterAddr string) string {
	t.Helper()
	path := lookPathOrSkip(t, "redis-server")
	port := freePort(t)
	host, masterPort, _ := strings.Cut(masterAddr, ":")
	config := filepath.Join(t.TempDir(), "sentinel.conf") // sentinel rewrites it
	content := fmt.Sprintf("port %d\nbind 127.0.0.1\nsentinel monitor mymaster %s %s 1\nsentinel down-after-milliseconds mymaster 5000\n",
		port, host, masterPort)
	if err := os.WriteFile(config, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := startProcess(t, nil, path, config, "--sentinel")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	client := redis.NewSentinelClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { client.Close() })
	waitFor(t, "sentinel on "+addr, 10*time.Second, func() error {
		if proc.Exited() {
			return fmt.Errorf("sentinel exited: %s", proc.Output.String())
		}
		got, err := client.GetMasterAddrByName(context.Background(), "mymaster").Result()
		if err != nil {
			return err
		}
		if strings.Join(got, ":") != masterAddr {
			return fmt.Errorf("sentinel reports master %v", got)
		}
		return nil
	})
	return addr
}

// TestSentinelReplicasShareOneToken runs two sidecar replicas that find
// Redis through a real Sentinel (addrs + master_name).
func TestSentinelReplicasShareOneToken(t *testing.T) {
	f := newFleet(t)
	sentinel := startSentinel(t, f.redis.Addr)
	config := sidecarConfig(`
		authority_host {env.TEST_AUTHORITY_HOST}
		tenant_id      {env.TEST_TENANT_ID}
		client_id      {env.TEST_CLIENT_ID}
		client_secret  {env.TEST_CLIENT_SECRET}
		redis {
			addrs       {env.TEST_SENTINEL}
			master_name mymaster
			key_prefix  `+testKeyPrefix+`
			insecure_plaintext
		}
		application orders-api `+testScope,
		route{Path: "/orders", Application: "orders-api"})
	assertTwoReplicasShareOneToken(t, f, config, append(f.env(testClientSecret), "TEST_SENTINEL="+sentinel)...)
	if n := len(f.records(t)); n != 1 {
		t.Errorf("the master holds %d records, want 1", n)
	}
}

// assertTwoReplicasShareOneToken starts two replicas on config and checks
// that they inject the same token after one token request. It returns the
// first replica.
func assertTwoReplicasShareOneToken(t *testing.T, f *fleet, config string, env ...string) *sidecar {
	t.Helper()
	first := startSidecar(t, config, env...)
	second := startSidecar(t, config, env...)
	token := tokenVia(t, first, f.upstream, "/orders/a")
	if got := tokenVia(t, second, f.upstream, "/orders/b"); got != token {
		t.Error("the replicas did not share the token")
	}
	if got := f.emulator.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
	return first
}
