package entratokenendpoint

import (
	"context"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

// TestAccessLogWarningOnlyWhenTheServerLogs: the warning that the access
// log shows X-IDENTITY-HEADER comes once, at the first request the server
// logs; never for a site without `log`, a skipped host or imds.
func TestAccessLogWarningOnlyWhenTheServerLogs(t *testing.T) {
	app, _, _ := apptest.NewApp(t, apptest.ClientSecret)
	const warning = "Caddy's access log shows the X-IDENTITY-HEADER secret"
	for _, tc := range []struct {
		name     string
		protocol string
		logs     *caddyhttp.ServerLogConfig
		want     int // warnings after three requests
	}{
		{"no log", ProtocolAppService, nil, 0},
		{"logged", ProtocolAppService, &caddyhttp.ServerLogConfig{}, 1},
		{"logged by name", ProtocolRecord, &caddyhttp.ServerLogConfig{LoggerNames: map[string]caddyhttp.StringArray{"127.0.0.1": {"log0"}}, SkipUnmappedHosts: true}, 1},
		{"host skipped", ProtocolAppService, &caddyhttp.ServerLogConfig{SkipHosts: []string{"127.0.0.1"}}, 0},
		{"unmapped host skipped", ProtocolRecord, &caddyhttp.ServerLogConfig{LoggerNames: map[string]caddyhttp.StringArray{"*.example": {"log0"}}, SkipUnmappedHosts: true}, 0},
		{"imds has no secret", ProtocolIMDS, &caddyhttp.ServerLogConfig{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, logs := newTestEndpoint(t, app, tc.protocol, nil)
			srv := &caddyhttp.Server{Logs: tc.logs}
			for range 3 {
				req := endpointRequest(http.MethodGet, "/", nil)
				req = req.WithContext(context.WithValue(req.Context(), caddyhttp.ServerCtxKey, srv))
				call(t, e, req)
			}
			if got := logs.FilterMessageSnippet(warning).Len(); got != tc.want {
				t.Errorf("%d warnings, want %d", got, tc.want)
			}
		})
	}
}
