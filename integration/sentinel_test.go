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
// reports that master. With tlsFiles, the Sentinel only speaks TLS, to its
// clients and to the master.
func startSentinel(t *testing.T, masterAddr string, tlsFiles *tlsRedis) string {
	t.Helper()
	path := lookPathOrSkip(t, "redis-server")
	port := freePort(t)
	host, masterPort, _ := strings.Cut(masterAddr, ":")
	listen := fmt.Sprintf("port %d\n", port)
	options := &redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	if tlsFiles != nil {
		listen = fmt.Sprintf("port 0\ntls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n"+
			"tls-auth-clients no\ntls-replication yes\n", port, tlsFiles.certFile, tlsFiles.keyFile, tlsFiles.caFile)
		options.TLSConfig = tlsFiles.tlsConfig()
	}
	config := filepath.Join(t.TempDir(), "sentinel.conf") // sentinel rewrites it
	content := fmt.Sprintf("%sbind 127.0.0.1\nsentinel monitor mymaster %s %s 1\nsentinel down-after-milliseconds mymaster 5000\n",
		listen, host, masterPort)
	if err := os.WriteFile(config, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := startProcess(t, nil, path, config, "--sentinel")
	client := redis.NewSentinelClient(options)
	t.Cleanup(func() { client.Close() })
	waitFor(t, "sentinel on "+options.Addr, 10*time.Second, func() error {
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
	return options.Addr
}

// TestSentinelReplicasShareOneToken runs two sidecar replicas that find
// Redis through a real Sentinel (addrs + master_name).
func TestSentinelReplicasShareOneToken(t *testing.T) {
	f := newFleet(t)
	sentinel := startSentinel(t, f.redis.Addr, nil)
	config := withRedis(`redis {
			addrs       {env.TEST_SENTINEL}
			master_name mymaster`)
	assertTwoReplicasShareOneToken(t, f, config, append(f.env(testClientSecret), "TEST_SENTINEL="+sentinel)...)
	if n := len(f.records(t)); n != 1 {
		t.Errorf("the master holds %d records, want 1", n)
	}
}

// TestSentinelOverTLSReplicasShareOneToken: with tls and tls_ca, the
// replicas speak TLS to the Sentinel and to the master it names, both with
// certificates of a private CA and speaking nothing else.
func TestSentinelOverTLSReplicasShareOneToken(t *testing.T) {
	r := startTLSRedis(t)
	sentinel := startSentinel(t, r.addr, r)
	r.assertReplicasShareOneToken(t, `redis {
			addrs       {env.TEST_SENTINEL}
			master_name mymaster
			tls
			tls_ca      {env.TEST_REDIS_CA}`, "TEST_SENTINEL="+sentinel)
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
