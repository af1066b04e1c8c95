package caddymodule

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/binding"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// Results of requests_total besides the error codes answered: the request
// got its token, or its client left before it did.
const (
	resultInjected = "injected"
	resultCanceled = "canceled"
)

// moduleMetrics are the module's Prometheus collectors, the app's and its
// handlers': namespace caddy, subsystem entra. They are made once per
// process and registered on each config's registry, so counters carry over
// reloads. Labels hold application names (bounded by the config), protocol
// names and fixed results and reasons: never a token, a secret or anything
// a client sent.
type moduleMetrics struct {
	tokenRequests        *prometheus.CounterVec
	tokenRequestDuration *prometheus.HistogramVec
	requests             *prometheus.CounterVec
	purges               *prometheus.CounterVec
	storeDrops           *prometheus.CounterVec
	storeAvailable       prometheus.GaugeFunc
	// endpointTokens and endpointRefusals are entra_token_endpoint's.
	endpointTokens   *prometheus.CounterVec
	endpointRefusals *prometheus.CounterVec
}

// metrics returns the module's collectors, making them on first use.
var metrics = sync.OnceValue(func() *moduleMetrics {
	const ns, sub = "caddy", "entra"
	return &moduleMetrics{
		tokenRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "token_requests_total",
			Help: "Token requests made, by application and result (success, throttled, transient_error, permanent_error), as the token cache's backoff classifies them.",
		}, []string{"application", "result"}),
		tokenRequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "token_request_duration_seconds",
			Help:    "Time taken by token requests, by application.",
			Buckets: prometheus.DefBuckets,
		}, []string{"application"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Requests through entra_token, by application and result: injected, or the error code answered.",
		}, []string{"application", "result"}),
		purges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "tokens_purged_total",
			Help: "Tokens purged because downstream refused them (purge_on_status), by application.",
		}, []string{"application"}),
		storeDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "store_drops_total",
			Help: "Tokens the shared store asked this replica to drop (record deleted and announced), by application and result: dropped, or kept because one was dropped or purged less than 10s before.",
		}, []string{"application", "result"}),
		storeAvailable: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "store_available",
			Help: "1 while the token stores in use answered their last call (Redis, or the in-memory store), 0 from a failed call to the next success.",
		}, storesAvailable),
		endpointTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "endpoint_tokens_total",
			Help: "Tokens handed out by entra_token_endpoint to local applications, by application and protocol (record, app_service, imds).",
		}, []string{"application", "protocol"}),
		endpointRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "endpoint_refusals_total",
			Help: "Requests entra_token_endpoint refused without a token, by protocol and reason.",
		}, []string{"protocol", "reason"}),
	}
})

// registerMetrics registers the module's collectors on registry; a
// collector already there is fine.
func registerMetrics(registry *prometheus.Registry) error {
	if registry == nil {
		return nil
	}
	m := metrics()
	for _, c := range []prometheus.Collector{m.tokenRequests, m.tokenRequestDuration, m.requests, m.purges,
		m.storeDrops, m.storeAvailable, m.endpointTokens, m.endpointRefusals} {
		var already prometheus.AlreadyRegisteredError
		if err := registry.Register(c); err != nil && !errors.As(err, &already) {
			return err
		}
	}
	return nil
}

// fetchObserver returns the application's tokencache OnFetch: it counts each
// token request by the cache's classification of its outcome (the one its
// backoff obeys), times it, and logs a failure (binding.RequestErrorFields);
// the cache logs successful fetches.
func fetchObserver(application, tokenEndpoint string, logger *zap.Logger) func(tokencache.FetchOutcome) {
	m := metrics()
	return func(o tokencache.FetchOutcome) {
		m.tokenRequestDuration.WithLabelValues(application).Observe(o.Duration.Seconds())
		m.tokenRequests.WithLabelValues(application, string(o.Result)).Inc()
		if o.Err != nil {
			logger.Error("token request failed", append(binding.RequestErrorFields(o.Err),
				zap.String("application", application),
				zap.String("result", string(o.Result)),
				zap.String("token_endpoint", tokenEndpoint))...)
		}
	}
}

// storesAvailable is 1 unless a pooled cache's store is in an outage.
func storesAvailable() float64 {
	available := 1.0
	cachePool.Range(func(_, value any) bool {
		if pooled, ok := value.(pooledCache); ok && !pooled.StoreAvailable() {
			available = 0
		}
		return true
	})
	return available
}

// storeDropObserver returns the application's tokencache OnStoreDrop: it
// counts each drop the store asked for, dropped or kept.
func storeDropObserver(application string) func(dropped bool) {
	m := metrics()
	return func(dropped bool) {
		result := "kept"
		if dropped {
			result = "dropped"
		}
		m.storeDrops.WithLabelValues(application, result).Inc()
	}
}
