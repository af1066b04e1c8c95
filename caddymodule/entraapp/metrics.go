package entraapp

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/binding"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// The app's collectors, made once per process and registered on each
// config's registry, so counters carry over reloads. Labels never hold a
// token, a secret or anything a client sent.
var (
	tokenRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "entra", Name: "token_requests_total",
		Help: "Token requests made, by application and result (success, throttled, transient_error, permanent_error), as the token cache's backoff classifies them.",
	}, []string{"application", "result"})
	tokenRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "entra", Name: "token_request_duration_seconds",
		Help:    "Time taken by token requests, by application.",
		Buckets: prometheus.DefBuckets,
	}, []string{"application"})
	storeDrops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "entra", Name: "store_drops_total",
		Help: "Tokens the shared store asked this replica to drop (record deleted and announced), by application and result: dropped, or kept because no purge mark names the token or one was dropped or purged less than 10s before.",
	}, []string{"application", "result"})
	storeAvailable = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "entra", Name: "store_available",
		Help: "1 while the token stores in use answered their last call (Redis, or the in-memory store), 0 from a failed call to the next success.",
	}, storesAvailable)
)

// RegisterMetrics registers the app's collectors and a handler's on
// registry; one already there is fine.
func RegisterMetrics(registry *prometheus.Registry, collectors ...prometheus.Collector) error {
	if registry == nil {
		return nil
	}
	for _, c := range append([]prometheus.Collector{tokenRequests, tokenRequestDuration, storeDrops, storeAvailable, onBehalfOfResults}, collectors...) {
		var already prometheus.AlreadyRegisteredError
		if err := registry.Register(c); err != nil && !errors.As(err, &already) {
			return err
		}
	}
	return nil
}

// fetchObserver is an application's OnFetch: it counts token requests by
// the cache's classification, times them and logs failures (the cache logs
// successes).
func fetchObserver(application, tokenEndpoint string, logger *zap.Logger) func(tokencache.FetchOutcome) {
	return func(o tokencache.FetchOutcome) {
		tokenRequestDuration.WithLabelValues(application).Observe(o.Duration.Seconds())
		tokenRequests.WithLabelValues(application, string(o.Result)).Inc()
		if o.Err != nil {
			logger.Error("token request failed", append(binding.RequestErrorFields(o.Err),
				zap.String("application", application), zap.String("result", string(o.Result)),
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

// storeDropObserver is an application's OnStoreDrop.
func storeDropObserver(application string) func(dropped bool) {
	return func(dropped bool) {
		result := "kept"
		if dropped {
			result = "dropped"
		}
		storeDrops.WithLabelValues(application, result).Inc()
	}
}
