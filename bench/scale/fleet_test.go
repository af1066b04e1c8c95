package scale

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/internal/testproc"
)

// fleetSpec is one run: Replicas Caddy processes with Apps applications
// each, sharing one redis-server (sealed records) and one emulator.
type fleetSpec struct {
	Replicas, Apps int
	Lifetime       time.Duration // of the emulator's tokens
	RefreshWindow  time.Duration // the entra app's refresh_window
	Cycles         int           // steady refresh cycles to measure (each Lifetime/2: refresh_ahead 0.5)
	RequestRate    int           // requests per second through entra_token, spread over replicas and applications
}

// fleet is a running fleet.
type fleet struct {
	spec     fleetSpec
	emu      *entratest.Emulator
	redis    *redis.Client
	replicas []*replica

	sent, failed atomic.Int64
	mu           sync.Mutex
	failures     map[string]int // why requests failed: status or error
}

func (f *fleet) noteFailure(why string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures == nil {
		f.failures = map[string]int{}
	}
	f.failures[why]++
}

type replica struct {
	proc   *testproc.Process
	site   string // http://127.0.0.1:port
	admin  *http.Client
	socket string
}

const (
	benchClientID = "00000000-0000-4000-8000-0000000000c1"
	benchSecret   = "scale-bench-secret"
)

func appName(i int) string { return fmt.Sprintf("app%04d", i) }

// startFleet starts redis-server, the emulator and the replicas, all at
// once, as a rollout of a new deployment does.
func startFleet(t *testing.T, caddy string, spec fleetSpec) *fleet {
	t.Helper()
	f := &fleet{spec: spec}
	redisAddr, _ := testproc.StartRedis(t, "--maxclients", "20000")
	f.redis = redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { f.redis.Close() })

	emu, err := entratest.New(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	emu.AddClient(benchClientID, benchSecret)
	emu.SetTokenLifetime(spec.Lifetime)
	f.emu = emu
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emuServer := &http.Server{Handler: emu, ConnState: emu.ConnState, ReadHeaderTimeout: 10 * time.Second}
	go emuServer.Serve(l)
	t.Cleanup(func() { emuServer.Close() })

	key := make([]byte, 32)
	rand.Read(key)
	var apps strings.Builder
	var routes strings.Builder
	for i := range spec.Apps {
		fmt.Fprintf(&apps, "\t\tapplication %s api://bench-%04d/.default\n", appName(i), i)
		fmt.Fprintf(&routes, "\thandle /%s {\n\t\tentra_token %s\n\t\trespond 204\n\t}\n", appName(i), appName(i))
	}
	for i := range spec.Replicas {
		dir := t.TempDir()
		port := testproc.FreePort(t)
		socket := filepath.Join(dir, "admin.sock")
		config := fmt.Sprintf(`{
	admin unix/%s
	storage file_system %s
	entra {
		authority_host http://%s
		tenant_id      %s
		client_id      %s
		client_secret  {env.BENCH_SECRET}
		refresh_window %s
		prefetch
		redis redis://%s {
			encryption_key %s
		}
%s	}
}
http://127.0.0.1:%d {
%s}
`, socket, dir, l.Addr(), emu.TenantID(), benchClientID, spec.RefreshWindow, redisAddr,
			base64.StdEncoding.EncodeToString(key), apps.String(), port, routes.String())
		path := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		f.replicas = append(f.replicas, &replica{site: fmt.Sprintf("http://127.0.0.1:%d", port), socket: socket, admin: &http.Client{
			Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", socket)
			}},
			Timeout: 10 * time.Second,
		}})
		f.replicas[i].proc = testproc.Start(t, []string{"BENCH_SECRET=" + benchSecret, "HOME=" + dir},
			caddy, "run", "--config", path, "--adapter", "caddyfile")
	}
	for _, r := range f.replicas {
		testproc.WaitFor(t, "a replica's admin API", time.Minute, func() error {
			if r.proc.Exited() {
				t.Fatalf("a replica exited: %s", r.proc.Output.String())
			}
			resp, err := r.admin.Get("http://localhost/config/")
			if err == nil {
				resp.Body.Close()
			}
			return err
		})
	}
	return f
}

// holdsEveryToken reports whether every application of r is usable there.
func (r *replica) holdsEveryToken(apps int) (bool, error) {
	usable, err := r.usableTokens()
	return usable == apps, err
}

// usableTokens counts the applications whose token is usable on r.
func (r *replica) usableTokens() (int, error) {
	resp, err := r.admin.Get("http://localhost/entra/tokens")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var entries []struct {
		Usable *bool `json:"usable"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		return 0, err
	}
	usable := 0
	for _, e := range entries {
		if e.Usable != nil && *e.Usable {
			usable++
		}
	}
	return usable, nil
}

// waitConverged waits until every replica holds every token, logging
// its progress every 15 s.
func (f *fleet) waitConverged(t *testing.T, timeout time.Duration) {
	t.Helper()
	pending := append([]*replica(nil), f.replicas...)
	start, logged := time.Now(), time.Now()
	testproc.WaitFor(t, "every replica holding every token", timeout, func() error {
		if time.Since(logged) >= 15*time.Second {
			logged = time.Now()
			held := make([]int, len(pending))
			for i, r := range pending {
				held[i], _ = r.usableTokens()
			}
			calls := f.redisCalls(t)
			t.Logf("after %s: %d token requests, %d Redis connections made, %d reads; tokens held by the replicas not there yet: %v",
				time.Since(start).Round(time.Second), f.emu.TokenRequests(), calls["hello"], calls["getrange"]+calls["get"], held)
		}
		for len(pending) > 0 {
			ok, err := pending[0].holdsEveryToken(f.spec.Apps)
			if pending[0].proc.Exited() {
				t.Fatalf("a replica exited: %s", pending[0].proc.Output.String())
			}
			if err != nil || !ok {
				return fmt.Errorf("%d replicas not there yet (%v)", len(pending), err)
			}
			pending = pending[1:]
		}
		return nil
	})
}

// sendTraffic sends spec.RequestRate requests per second through
// entra_token, round robin over replicas and applications, until stop is
// closed; every answer but 204 counts as failed.
func (f *fleet) sendTraffic(stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	if f.spec.RequestRate <= 0 {
		return &wg
	}
	client := &http.Client{Timeout: 10 * time.Second}
	tick := time.NewTicker(time.Second / time.Duration(f.spec.RequestRate))
	wg.Go(func() {
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			r := f.replicas[n%len(f.replicas)]
			url := r.site + "/" + appName((n/len(f.replicas))%f.spec.Apps)
			wg.Go(func() {
				f.sent.Add(1)
				resp, err := client.Get(url)
				if err != nil {
					f.failed.Add(1)
					f.noteFailure(err.Error())
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					f.failed.Add(1)
					f.noteFailure(resp.Status)
				}
			})
		}
	})
	return &wg
}

// redisCalls returns Redis's command counts (INFO commandstats).
func (f *fleet) redisCalls(t *testing.T) map[string]int64 {
	t.Helper()
	info, err := f.redis.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, rest, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
		calls[name] = n
	}
	return calls
}

// redisClients returns the number of connected Redis clients.
func (f *fleet) redisClients(t *testing.T) int64 {
	t.Helper()
	info, err := f.redis.Info(context.Background(), "clients").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_clients:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// countLogs counts the log lines holding s over every replica.
func (f *fleet) countLogs(s string) int {
	n := 0
	for _, r := range f.replicas {
		n += strings.Count(r.proc.Output.String(), s)
	}
	return n
}

// firstLog returns the first log line holding s, "" if none.
func (f *fleet) firstLog(s string) string {
	for _, r := range f.replicas {
		for line := range strings.Lines(r.proc.Output.String()) {
			if strings.Contains(line, s) {
				return strings.TrimSpace(line)
			}
		}
	}
	return ""
}

// cpuSeconds returns the CPU time a replica has used (user + system).
func (r *replica) cpuSeconds() float64 {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.proc.Cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command's closing parenthesis: utime and stime are
	// the 12th and 13th, in clock ticks (100 per second on Linux).
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100
}

// memory returns a replica's RSS in MiB and its goroutines.
func (r *replica) memory() (rssMiB float64, goroutines int) {
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.proc.Cmd.Process.Pid)); err == nil {
		for line := range strings.Lines(string(status)) {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
				rssMiB = kb / 1024
			}
		}
	}
	if resp, err := r.admin.Get("http://localhost/debug/pprof/goroutine?debug=1"); err == nil {
		first, _ := bufio.NewReader(resp.Body).ReadString('\n')
		resp.Body.Close()
		fmt.Sscanf(first, "goroutine profile: total %d", &goroutines)
	}
	return rssMiB, goroutines
}
