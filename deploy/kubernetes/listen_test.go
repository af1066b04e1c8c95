package kubernetes_test

import (
	"encoding/json"
	"strings"
	"testing"

	_ "github.com/caddy-entra/caddy-entra/handoff/caddyhandoff" // the ConfigMaps listen through handoff/
)

// TestConfigMapsListenThroughHandoff: every site of every ConfigMap's
// Caddyfile listens on a handoff/ address, with the handoff app that
// installs its hooks. Caddy's own TCP listeners set SO_REUSEPORT, so a
// process of the sidecar's user could bind the same port beside them and
// take a share of the connections; the handoff network's socket does not
// set it, and keeps Caddy's reloads losing no request.
func TestConfigMapsListenThroughHandoff(t *testing.T) {
	m := load(t)
	if len(m.configMaps) == 0 {
		t.Fatal("no config maps")
	}
	for _, cm := range m.configMaps {
		cfg := adaptConfigMap(t, cm)
		var apps struct {
			Apps map[string]json.RawMessage `json:"apps"`
		}
		if err := json.Unmarshal(cfg.raw, &apps); err != nil {
			t.Fatal(err)
		}
		if _, ok := apps.Apps["handoff"]; !ok {
			t.Errorf("config map %s: no handoff app (the global option `handoff`)", cm.Name)
		}
		if len(cfg.Apps.HTTP.Servers) == 0 {
			t.Errorf("config map %s: no http server", cm.Name)
		}
		for name, srv := range cfg.Apps.HTTP.Servers {
			for _, listen := range srv.Listen {
				if !strings.HasPrefix(listen, "handoff/") {
					t.Errorf("config map %s: server %s listens on %s: a SO_REUSEPORT socket another process of its user can share; write bind handoff/<host>", cm.Name, name, listen)
				}
			}
		}
	}
}
