package caddymodule

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// endpointMetrics are entra_token_endpoint's collectors, made once per
// process and registered on each config's registry like moduleMetrics.
// Labels hold configured application names, protocol names and fixed
// reasons: never a token, a secret or anything a client sent.
type endpointMetrics struct {
	tokens   *prometheus.CounterVec
	refusals *prometheus.CounterVec
}

// endpointMetricsOnce returns the collectors, making them on first use.
var endpointMetricsOnce = sync.OnceValue(func() *endpointMetrics {
	const ns, sub = "caddy", "entra"
	return &endpointMetrics{
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "endpoint_tokens_total",
			Help: "Tokens handed out by entra_token_endpoint to local applications, by application and protocol (record, app_service, imds).",
		}, []string{"application", "protocol"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "endpoint_refusals_total",
			Help: "Requests entra_token_endpoint refused without a token, by protocol and reason.",
		}, []string{"protocol", "reason"}),
	}
})

// registerEndpointMetrics registers the collectors on registry; a collector
// already there is fine.
func registerEndpointMetrics(registry *prometheus.Registry) error {
	if registry == nil {
		return nil
	}
	m := endpointMetricsOnce()
	for _, c := range []prometheus.Collector{m.tokens, m.refusals} {
		var already prometheus.AlreadyRegisteredError
		if err := registry.Register(c); err != nil && !errors.As(err, &already) {
			return err
		}
	}
	return nil
}
