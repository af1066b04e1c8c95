package entraapp

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalCaddyfile feeds arbitrary text to the entra global option's
// parser: it must never panic, and whatever it accepts must survive a JSON
// round trip (what the Caddyfile adapter does with it).
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"tenant_id t\nclient_id c\nclient_secret s\napplication a api://a/.default",
		"client_certificate c.pem k.pem {\nkey_password p\nsend_x5c\n}\napplication a {\nscope s\n}",
		"managed_identity id {\nendpoint http://127.0.0.1/x\n}\nredis {\naddrs a:1 b:2\ntls\nencryption_key k\n}",
		"workload_identity\nrefresh_ahead 50%\nwait_timeout 2s\ntoken_request_param resource r",
		"application a b c {\ntenant_id t\nclient_id c\nfederated_token_file /f\n}",
		"redis redis://x {\nkey_prefix p:\ntimeout 1s\ndb 3\n}",
		"refresh_window -1s", "application", "redis {\n}", "}", "{", "\"unterminated",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var app App
		d := caddyfile.NewTestDispenser("entra {\n" + body + "\n}")
		if err := app.UnmarshalCaddyfile(d); err != nil {
			return
		}
		raw, err := json.Marshal(app)
		if err != nil {
			t.Fatalf("accepted config does not marshal: %v", err)
		}
		var back App
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatalf("accepted config does not unmarshal: %v", err)
		}
		again, _ := json.Marshal(back)
		if string(again) != string(raw) {
			t.Fatalf("JSON round trip changed the config:\n%s\n%s", raw, again)
		}
	})
}
