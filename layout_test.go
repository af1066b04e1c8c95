package caddyentra

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPackageLayout keeps the direction of imports that DESIGN.md and
// docs/development.md state: entra and tokencache (with its Redis store)
// import no Caddy and not each other; the glue (binding) imports no Caddy;
// a handler package imports the app package and no other handler; the app
// imports no handler.
func TestPackageLayout(t *testing.T) {
	const mod = "github.com/caddy-entra/caddy-entra/"
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", "./"+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps ./%s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	imports := func(pkg, prefix string) []string {
		var found []string
		for _, d := range deps(pkg) {
			if d != mod+pkg && strings.HasPrefix(d, prefix) {
				found = append(found, d)
			}
		}
		return found
	}
	for pkg, banned := range map[string][]string{
		"entra":                 {"github.com/caddyserver/", mod + "tokencache"},
		"tokencache":            {"github.com/caddyserver/", mod + "entra"},
		"tokencache/redisstore": {"github.com/caddyserver/", mod + "entra"},
		"binding":               {"github.com/caddyserver/"},
		"caddymodule/entraapp":  {mod + "caddymodule/entratoken", mod + "caddymodule/entraready"},
	} {
		for _, b := range banned {
			if got := imports(pkg, b); len(got) > 0 {
				t.Errorf("%s imports %v", pkg, got)
			}
		}
	}
	handlers := []string{"caddymodule/entratoken", "caddymodule/entratokenendpoint", "caddymodule/entraready"}
	for _, h := range handlers {
		if len(imports(h, mod+"caddymodule/entraapp")) == 0 {
			t.Errorf("%s does not import the app package", h)
		}
		for _, other := range handlers {
			if other != h && len(imports(h, mod+other)) > 0 {
				t.Errorf("handler %s imports handler %s", h, other)
			}
		}
	}
}
