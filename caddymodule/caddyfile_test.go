package caddymodule

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// TestCaddyfileAdapt adapts each testdata/adapt/*.caddyfiletest (a Caddyfile,
// a line of ten dashes, the expected JSON) and compares the JSON.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(data), "----------")
			if !ok {
				t.Fatal("golden file lacks the ---------- separator")
			}
			adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(strings.TrimSpace(input)+"\n"), nil)
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			for _, w := range warnings {
				t.Logf("adapt warning: %s", w.Message)
			}
			var got, want bytes.Buffer
			if err := json.Indent(&got, adapted, "", "\t"); err != nil {
				t.Fatal(err)
			}
			if err := json.Indent(&want, []byte(strings.TrimSpace(expected)), "", "\t"); err != nil {
				t.Fatalf("expected JSON is invalid: %v", err)
			}
			if got.String() != want.String() {
				t.Errorf("adapted JSON differs.\ngot:\n%s\nwant:\n%s", got.String(), want.String())
			}
		})
	}
}
