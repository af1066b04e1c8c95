// Package scale is the fleet-at-scale benchmark: R replica processes of the
// real Caddy binary with A applications each, one real redis-server (sealed
// records) and the emulator, started at once with prefetch. It measures a
// cold start (token requests, time until every replica holds every token,
// "token store unavailable" warnings) and steady refresh cycles (token
// requests and Redis commands per refresh), connections to the token
// endpoint and to Redis, and each replica's RSS and goroutines.
//
// TestScaleSmall runs a small fleet in CI and asserts the fleet's promise.
// The full-size run prints the same report:
//
//	go test ./bench/scale -run TestScale$ -v -timeout 30m -args -replicas 20 -apps 1000
package scale

import (
	"flag"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/internal/testproc"
)

var caddyBinary string

func TestMain(m *testing.M) {
	flag.Parse()
	testproc.RunWithCaddy(m, "../..", &caddyBinary)
}

var (
	replicasFlag = flag.Int("replicas", 0, "TestScale: replica processes (0: skip TestScale)")
	appsFlag     = flag.Int("apps", 1000, "TestScale: applications per replica")
	lifetimeFlag = flag.Duration("lifetime", 3*time.Minute, "TestScale: token lifetime (a refresh cycle is half of it)")
	cyclesFlag   = flag.Int("cycles", 2, "TestScale: steady refresh cycles measured")
	rateFlag     = flag.Int("rate", 200, "TestScale: requests per second through entra_token")
)

// TestScale is the full-size benchmark; it runs only with -replicas.
func TestScale(t *testing.T) {
	if *replicasFlag == 0 {
		t.Skip("the full-size benchmark runs with -args -replicas N (see the package doc)")
	}
	r := run(t, fleetSpec{
		Replicas: *replicasFlag, Apps: *appsFlag, Lifetime: *lifetimeFlag,
		RefreshWindow: 60 * time.Second, Cycles: *cyclesFlag, RequestRate: *rateFlag,
	})
	t.Log("\n" + r.String())
}

// TestScaleSmall: 3 replicas × 30 applications started at once share one
// token per application, converge, never give up on the store, and refresh
// once per application and cycle, with every request answered.
func TestScaleSmall(t *testing.T) {
	spec := fleetSpec{Replicas: 3, Apps: 30, Lifetime: 16 * time.Second, RefreshWindow: 4 * time.Second, Cycles: 2, RequestRate: 50}
	r := run(t, spec)
	t.Log("\n" + r.String())
	if r.ColdTokenRequests > int64(spec.Apps) {
		t.Errorf("cold start: %d token requests, want at most %d (one per application)", r.ColdTokenRequests, spec.Apps)
	}
	if r.StoreUnavailable > 0 {
		t.Errorf("%d replicas gave up on the store", r.StoreUnavailable)
	}
	if r.Failed > 0 {
		t.Errorf("%d of %d requests failed", r.Failed, r.Sent)
	}
	perCycle := float64(r.SteadyTokenRequests) / float64(spec.Cycles)
	if perCycle < 0.5*float64(spec.Apps) || perCycle > 1.5*float64(spec.Apps) {
		t.Errorf("steady: %.1f token requests per cycle, want about %d (one per application)", perCycle, spec.Apps)
	}
}

// report is what a run measured.
type report struct {
	Spec                                     fleetSpec
	ColdTokenRequests                        int64
	Converged                                time.Duration
	StoreUnavailable                         int
	StoreUnavailableLine                     string
	StartCPU                                 float64 // mean CPU seconds per replica until convergence
	SteadyTokenRequests                      int64
	SteadyRedis                              map[string]int64 // commands during the steady cycles
	EndpointConnsAccepted, EndpointConnsOpen int64
	RedisClients                             int64
	RSSMiB                                   []float64
	Goroutines                               []int
	Sent, Failed                             int64
	Failures                                 map[string]int
}

func run(t *testing.T, spec fleetSpec) *report {
	rep := &report{Spec: spec}
	start := time.Now()
	f := startFleet(t, caddyBinary, spec)
	stop := make(chan struct{})
	traffic := f.sendTraffic(stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		traffic.Wait()
	}()
	f.waitConverged(t, 5*time.Minute)
	rep.Converged = time.Since(start)
	for _, r := range f.replicas {
		rep.StartCPU += r.cpuSeconds() / float64(len(f.replicas))
	}
	rep.ColdTokenRequests = f.emu.TokenRequests()

	before, beforeCalls := f.emu.TokenRequests(), f.redisCalls(t)
	time.Sleep(time.Duration(spec.Cycles) * spec.Lifetime / 2) // the cycles being measured: wall-clock time is the subject
	rep.SteadyTokenRequests = f.emu.TokenRequests() - before
	rep.SteadyRedis = map[string]int64{}
	for name, n := range f.redisCalls(t) {
		if d := n - beforeCalls[name]; d > 0 {
			rep.SteadyRedis[name] = d
		}
	}
	close(stop)
	traffic.Wait()
	rep.Sent, rep.Failed, rep.Failures = f.sent.Load(), f.failed.Load(), f.failures
	rep.StoreUnavailable = f.countLogs("token store unavailable")
	rep.StoreUnavailableLine = f.firstLog("token store unavailable")
	rep.EndpointConnsAccepted, rep.EndpointConnsOpen = f.emu.Connections(), f.emu.OpenConnections()
	rep.RedisClients = f.redisClients(t)
	for _, r := range f.replicas {
		rss, g := r.memory()
		rep.RSSMiB, rep.Goroutines = append(rep.RSSMiB, rss), append(rep.Goroutines, g)
	}
	return rep
}

func (r *report) String() string {
	var b strings.Builder
	s := r.Spec
	refreshes := max(r.SteadyTokenRequests, 1)
	fmt.Fprintf(&b, "fleet: %d replicas × %d applications, tokens of %s, refresh_window %s, %d req/s\n", s.Replicas, s.Apps, s.Lifetime, s.RefreshWindow, s.RequestRate)
	fmt.Fprintf(&b, "cold start: %d token requests (ideal %d), every replica holds every token after %.1fs, %d 'token store unavailable' warnings\n",
		r.ColdTokenRequests, s.Apps, r.Converged.Seconds(), r.StoreUnavailable)
	fmt.Fprintf(&b, "CPU per replica until then: %.1fs (mean)\n", r.StartCPU)
	if r.StoreUnavailableLine != "" {
		fmt.Fprintf(&b, "first warning: %s\n", r.StoreUnavailableLine)
	}
	fmt.Fprintf(&b, "steady: %d token requests in %d cycles (%.1f per cycle, ideal %d)\n",
		r.SteadyTokenRequests, s.Cycles, float64(r.SteadyTokenRequests)/float64(s.Cycles), s.Apps)
	var names []string
	var reads, total int64
	for name, n := range r.SteadyRedis {
		names = append(names, fmt.Sprintf("%s=%d", name, n))
		total += n
		if name == "get" || name == "getrange" || name == "mget" {
			reads += n
		}
	}
	sort.Strings(names)
	fmt.Fprintf(&b, "redis during steady: %d commands, %.1f per refresh, %.1f reads (GET/GETRANGE) per refresh: %s\n",
		total, float64(total)/float64(refreshes), float64(reads)/float64(refreshes), strings.Join(names, " "))
	fmt.Fprintf(&b, "connections to the token endpoint: %d accepted, %d open at the end (%.1f per replica); redis clients: %d\n",
		r.EndpointConnsAccepted, r.EndpointConnsOpen, float64(r.EndpointConnsOpen)/float64(s.Replicas), r.RedisClients)
	var rss float64
	var g int
	for i := range r.RSSMiB {
		rss += r.RSSMiB[i]
		g += r.Goroutines[i]
	}
	n := float64(len(r.RSSMiB))
	fmt.Fprintf(&b, "per replica: %.0f MiB RSS, %.0f goroutines (mean)\n", rss/n, float64(g)/n)
	fmt.Fprintf(&b, "requests through entra_token: %d sent, %d failed %v\n", r.Sent, r.Failed, r.Failures)
	return b.String()
}
