package main

import (
	"bufio"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	_ "github.com/caddy-entra/caddy-entra/handoff/caddyhandoff" // the shipped configs listen through handoff/
)

// This check of the repository's shipped configs lives with the quick start:
// the repository root has no Go package, and this one already runs the main
// shipped config (Caddyfile.example) and links Caddy's standard modules, so
// every directive a snippet of README or docs/ uses adapts here.

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = "../.."

// shippedConfig is one Caddyfile the repository gives users to run or copy.
type shippedConfig struct {
	where string // file, and line for a snippet
	text  string
}

// shippedConfigs finds the Caddyfiles the repository ships: files named
// Caddyfile, Caddyfile.* or *.caddyfile outside testdata; every caddyfile
// code block of README.md and of the pages under docs/ (see docsConfig: a
// fragment is adapted inside a config); and Caddyfiles written by a
// script's here-document (bench/load.sh). Tests' own configs are not
// shipped.
func shippedConfigs(t *testing.T) []shippedConfig {
	t.Helper()
	var configs []shippedConfig
	err := filepath.WalkDir(repoRoot, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := entry.Name()
		if entry.IsDir() {
			if name == ".git" || name == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(repoRoot, path)
		switch {
		case name == "Caddyfile" || strings.HasPrefix(name, "Caddyfile.") || strings.HasSuffix(name, ".caddyfile"):
			content, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			configs = append(configs, shippedConfig{where: rel, text: string(content)})
		case isDocsPage(rel):
			for _, block := range caddyfileBlocks(t, path, rel) {
				configs = append(configs, docsConfig(block))
			}
		case strings.HasSuffix(name, ".sh"):
			configs = append(configs, scriptConfigs(t, path, rel)...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return configs
}

// isDocsPage reports whether a file (relative to the repository root) is
// README.md or a page under docs/.
func isDocsPage(rel string) bool {
	rel = filepath.ToSlash(rel)
	return rel == "README.md" || strings.HasPrefix(rel, "docs/") && strings.HasSuffix(rel, ".md")
}

// caddyfileBlocks returns a Markdown page's caddyfile code blocks: whole
// configs and fragments. A directive's or option's syntax, with its
// <placeholders>, is fenced caddy-d, as in Caddy's own docs, and is not
// returned.
func caddyfileBlocks(t *testing.T, path, rel string) []shippedConfig {
	t.Helper()
	return codeBlocks(t, path, rel, func(line string) bool {
		return strings.EqualFold(strings.TrimSpace(line), "```caddyfile")
	}, func(line string) bool { return strings.TrimSpace(line) == "```" }, false)
}

// docsPreamble opens the config a site snippet of the docs is adapted in:
// the admin API off, the handoff app, and an entra app with the
// applications the docs' examples name.
const docsPreamble = `{
	admin off
	handoff
	entra {
		tenant_id     00000000-0000-4000-8000-000000000001
		client_id     22222222-0000-4000-8000-0000000000c1
		client_secret {env.ENTRA_CLIENT_SECRET}
		application graph-api https://graph.microsoft.com/.default
		application orders-api api://orders/.default
	}
}

`

// docsConfig returns the whole config a caddyfile block of the docs is
// adapted as: a block that opens the global options block is one already;
// one of sites (":8080 { ... }") follows docsPreamble; any other is a
// fragment of the entra global option (a credential, an application, a
// redis block) and is adapted inside it, with the admin API off.
func docsConfig(block shippedConfig) shippedConfig {
	switch {
	case opensGlobalBlock(block.text):
		return block
	case opensSite(block.text):
		block.text = docsPreamble + block.text
	default:
		block.text = "{\n\tadmin off\n\tentra {\n" + block.text + "\t}\n}\n"
	}
	return block
}

// opensSite reports whether a Caddyfile's first block is a site listening
// on a port.
func opensSite(text string) bool {
	blocks, err := caddyfile.Parse("snippet", []byte(text))
	return err == nil && len(blocks) > 0 && len(blocks[0].GetKeysText()) > 0 &&
		allMatch(blocks[0].GetKeysText(), siteAddress)
}

// hereDocument matches a here-document that writes a Caddyfile, capturing
// its delimiter: cat > "$work/Caddyfile" <<'CADDY'.
var hereDocument = regexp.MustCompile(`(?i)caddyfile.*<<-?\s*['"]?(\w+)['"]?\s*$`)

// scriptConfigs returns the Caddyfiles a shell script writes with a
// here-document.
func scriptConfigs(t *testing.T, path, rel string) []shippedConfig {
	t.Helper()
	var delimiter string
	return codeBlocks(t, path, rel, func(line string) bool {
		if m := hereDocument.FindStringSubmatch(line); m != nil {
			delimiter = m[1]
			return true
		}
		return false
	}, func(line string) bool { return strings.TrimSpace(line) == delimiter }, false)
}

// codeBlocks returns the lines between a line for which start is true and
// the next for which end is true; with globalOnly, only those whose first
// line that is neither blank nor a comment is "{".
func codeBlocks(t *testing.T, path, rel string, start, end func(string) bool, globalOnly bool) []shippedConfig {
	t.Helper()
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var (
		blocks    []shippedConfig
		block     *strings.Builder
		startLine int
	)
	scanner := bufio.NewScanner(file)
	for n := 1; scanner.Scan(); n++ {
		line := scanner.Text()
		switch {
		case block == nil && start(line):
			block, startLine = new(strings.Builder), n+1
		case block != nil && end(line):
			if !globalOnly || opensGlobalBlock(block.String()) {
				blocks = append(blocks, shippedConfig{where: rel + ":" + strconv.Itoa(startLine), text: block.String()})
			}
			block = nil
		case block != nil:
			block.WriteString(line + "\n")
		}
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

func opensGlobalBlock(caddyfile string) bool {
	for line := range strings.Lines(caddyfile) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		return line == "{"
	}
	return false
}

// adminIsPrivate reports whether an adapted config's admin endpoint is off,
// or on a Unix socket file that no one but its owner may open; if not, it
// says why.
func adminIsPrivate(admin *caddy.AdminConfig) (ok bool, why string) {
	if admin == nil {
		return false, "it has no admin option, so Caddy serves the admin API on TCP " + caddy.DefaultAdminListen
	}
	if admin.Disabled {
		return true, ""
	}
	if admin.Listen == "" {
		return false, "its admin option has no address, so Caddy serves the admin API on TCP " + caddy.DefaultAdminListen
	}
	address, err := caddy.ParseNetworkAddress(admin.Listen)
	if err != nil {
		return false, "its admin address " + admin.Listen + " does not parse: " + err.Error()
	}
	if !address.IsUnixNetwork() {
		return false, "its admin API is on " + admin.Listen + " (network " + address.Network + "), which any process beside it can reach"
	}
	// Caddy's "path|mode" suffix; without one, Caddy makes the socket 0200.
	path, modeText, hasMode := strings.Cut(address.Host, "|")
	mode := uint64(0o200)
	if hasMode {
		if mode, err = strconv.ParseUint(modeText, 8, 32); err != nil {
			return false, "its admin socket mode " + modeText + " does not parse: " + err.Error()
		}
	}
	switch {
	case path == "":
		return false, "its admin socket " + admin.Listen + " has no path"
	case strings.HasPrefix(path, "@"):
		return false, "its admin socket " + admin.Listen + " is abstract: no file permissions guard it"
	case mode&0o077 != 0:
		return false, "its admin socket " + admin.Listen + " may be opened by users other than its owner"
	}
	return true, ""
}

// TestShippedConfigsKeepAdminPrivate: every shipped config that holds an
// entra app serves Caddy's admin API on a Unix socket with mode 0600 (or
// stricter), or not at all. Whoever reaches the admin API can load a
// config that sends the client secret to its own server, or gets a token
// for any resource, and every container of a pod shares loopback. Each
// config is adapted by the real Caddyfile adapter with its {$VARIABLES}
// unset, so their defaults apply, and admin.listen is read from the JSON.
func TestShippedConfigsKeepAdminPrivate(t *testing.T) {
	configs := shippedConfigs(t)
	checked := map[string]bool{}
	for _, config := range configs {
		t.Run(config.where, func(t *testing.T) {
			for _, m := range regexp.MustCompile(`\{\$(\w+)`).FindAllStringSubmatch(config.text, -1) {
				t.Setenv(m[1], "") // restored after the test
				os.Unsetenv(m[1])
			}
			adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(config.text), map[string]any{"filename": config.where})
			if err != nil {
				t.Fatalf("adapting the shipped config:\n%s\n%v", config.text, err)
			}
			checkAdminIsPrivate(t, config.where, adapted, checked)
		})
	}
	// The scan must have found the configs users are pointed at.
	requireScanned(t, checked, "an entra app", "Caddyfile.example", "README.md:", filepath.FromSlash("docs/entra.md:"), filepath.FromSlash("bench/load.sh:"))

	// The JSON configs of README.md and docs/ are read as they are.
	checkedJSON := map[string]bool{}
	for _, config := range docsJSONConfigs(t) {
		t.Run(config.where, func(t *testing.T) {
			checkAdminIsPrivate(t, config.where, []byte(config.text), checkedJSON)
		})
	}
	requireScanned(t, checkedJSON, "an entra app in JSON", filepath.FromSlash("docs/entra.md:"))
}

// checkAdminIsPrivate fails t if the JSON config holds an entra app and
// serves the admin API otherwise than privately; a config with an entra
// app is recorded in checked.
func checkAdminIsPrivate(t *testing.T, where string, config []byte, checked map[string]bool) {
	t.Helper()
	var parsed struct {
		Admin *caddy.AdminConfig         `json:"admin"`
		Apps  map[string]json.RawMessage `json:"apps"`
	}
	if err := json.Unmarshal(config, &parsed); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if _, ok := parsed.Apps["entra"]; !ok {
		return
	}
	checked[where] = true
	if ok, why := adminIsPrivate(parsed.Admin); !ok {
		t.Errorf("%s holds an entra app, but %s: serve the admin API on a Unix socket (admin unix//run/caddy-entra/admin.sock|0600) or write admin off", where, why)
	}
}

// docsJSONConfigs returns the json code blocks of README.md and the pages
// under docs/ that hold "apps": whole Caddy configs.
func docsJSONConfigs(t *testing.T) []shippedConfig {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	var configs []shippedConfig
	for _, path := range append(pages, filepath.Join(repoRoot, "README.md")) {
		rel, _ := filepath.Rel(repoRoot, path)
		blocks := codeBlocks(t, path, rel, func(line string) bool {
			return strings.EqualFold(strings.TrimSpace(line), "```json")
		}, func(line string) bool { return strings.TrimSpace(line) == "```" }, false)
		for _, block := range blocks {
			if strings.Contains(block.text, `"apps"`) {
				configs = append(configs, block)
			}
		}
	}
	return configs
}

// requireScanned fails t unless checked holds each of wants: a file name,
// or with a trailing ":" any block of that file; holding names what the
// checked configs hold, for the message.
func requireScanned(t *testing.T, checked map[string]bool, holding string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		found := false
		for where := range checked {
			found = found || where == want || strings.HasSuffix(want, ":") && strings.HasPrefix(where, want)
		}
		if !found {
			t.Errorf("no config with %s was checked in %s: the scan no longer finds it", holding, strings.TrimSuffix(want, ":"))
		}
	}
}

// TestAdminIsPrivate shows what the scan accepts and refuses.
func TestAdminIsPrivate(t *testing.T) {
	for listen, want := range map[string]bool{
		"unix//run/caddy-entra/admin.sock|0600": true,
		"unix//run/caddy-entra/admin.sock|0200": true,
		"unix//run/caddy-entra/admin.sock":      true, // Caddy's default mode: 0200
		"unix/{env.SOCKET}|0600":                true, // an empty placeholder is refused at load
		"unix//run/caddy-entra/admin.sock|0660": false,
		"unix//run/caddy-entra/admin.sock|0777": false,
		"unix/@caddy-admin|0600":                false,
		"unix/|0600":                            false,
		"localhost:2019":                        false,
		"127.0.0.1:2019":                        false,
		"tcp/[::1]:2019":                        false,
		"fd/3":                                  false,
	} {
		if got, why := adminIsPrivate(&caddy.AdminConfig{Listen: listen}); got != want {
			t.Errorf("adminIsPrivate(%q) = %v (%s), want %v", listen, got, why, want)
		}
	}
	if ok, _ := adminIsPrivate(&caddy.AdminConfig{Disabled: true}); !ok {
		t.Error("admin off refused")
	}
	if ok, _ := adminIsPrivate(nil); ok {
		t.Error("no admin option (Caddy's default, TCP) accepted")
	}
}
