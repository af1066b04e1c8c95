package main

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// siteAddress matches a server block key that is a site listening on a
// port: ":8080", "127.0.0.1:8080", "localhost:9180", "http://host:8080".
var siteAddress = regexp.MustCompile(`^(https?://)?[\w.\-\[\]:]*:\d+$`)

// TestShippedConfigsListenThroughHandoff: every site of every shipped
// Caddyfile — Caddyfile.example, the Caddyfiles of README.md and docs/
// (whole configs and site snippets) and of bench/load.sh — listens through the handoff
// network. Caddy's own TCP listeners set SO_REUSEPORT, so any process of
// the sidecar's user may bind the same address beside them and get a share
// of the connections (the requests, their tokens and endpoint secrets);
// handoff's socket does not set it. A whole config must also hold the
// handoff app (the global option), without which handoff/ is refused at
// load. The Kubernetes ConfigMaps are checked in deploy/
// (TestConfigMapsListenThroughHandoff).
func TestShippedConfigsListenThroughHandoff(t *testing.T) {
	checked := map[string]bool{}
	for _, config := range shippedConfigs(t) {
		t.Run(config.where, func(t *testing.T) {
			for _, m := range regexp.MustCompile(`\{\$(\w+)`).FindAllStringSubmatch(config.text, -1) {
				t.Setenv(m[1], "") // restored after the test
				os.Unsetenv(m[1])
			}
			adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(config.text), map[string]any{"filename": config.where})
			if err != nil {
				t.Fatalf("adapting the shipped config:\n%s\n%v", config.text, err)
			}
			var parsed struct {
				Apps struct {
					Handoff *json.RawMessage `json:"handoff"`
					HTTP    struct {
						Servers map[string]struct {
							Listen []string `json:"listen"`
						} `json:"servers"`
					} `json:"http"`
				} `json:"apps"`
			}
			if err := json.Unmarshal(adapted, &parsed); err != nil {
				t.Fatal(err)
			}
			if len(parsed.Apps.HTTP.Servers) == 0 {
				return
			}
			checked[config.where] = true
			if parsed.Apps.Handoff == nil {
				t.Errorf("%s has sites but no handoff app: add the global option `handoff`", config.where)
			}
			for name, srv := range parsed.Apps.HTTP.Servers {
				for _, listen := range srv.Listen {
					if !strings.HasPrefix(listen, "handoff/") {
						t.Errorf("%s: server %s listens on %s, a SO_REUSEPORT socket that any process of its user can share: write bind handoff/<host>", config.where, name, listen)
					}
				}
			}
		})
	}
	for _, snippet := range docsSiteSnippets(t) {
		t.Run(snippet.where, func(t *testing.T) {
			checked[snippet.where] = true
			if why := listensWithoutHandoff(snippet.text); why != "" {
				t.Errorf("%s: %s", snippet.where, why)
			}
		})
	}
	requireScanned(t, checked, "a site", "Caddyfile.example", "README.md:", filepath.FromSlash("docs/entra_token.md:"), filepath.FromSlash("bench/load.sh:"))
}

// docsSiteSnippets returns the caddyfile code blocks of README.md and of
// the pages under docs/ that do not open a global options block (those are
// whole configs, adapted above as they are).
func docsSiteSnippets(t *testing.T) []shippedConfig {
	t.Helper()
	var snippets []shippedConfig
	err := filepath.WalkDir(repoRoot, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		if entry.IsDir() || !isDocsPage(rel) {
			return nil
		}
		for _, block := range caddyfileBlocks(t, path, rel) {
			if !opensGlobalBlock(block.text) {
				snippets = append(snippets, block)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snippets
}

// listensWithoutHandoff parses a Caddyfile snippet and returns why one of
// its sites (a block whose keys are addresses with a port) does not listen
// through handoff/ alone, or "". Blocks of other syntax (an option's
// synopsis) are not sites and are left alone.
func listensWithoutHandoff(text string) string {
	blocks, err := caddyfile.Parse("snippet", []byte(text))
	if err != nil {
		return "" // a synopsis with <placeholders>, not a config
	}
	for _, block := range blocks {
		keys := block.GetKeysText()
		if len(keys) == 0 || !allMatch(keys, siteAddress) {
			continue
		}
		binds := 0
		for _, segment := range block.Segments {
			if segment.Directive() != "bind" {
				continue
			}
			for _, token := range segment[1:] {
				binds++
				if !strings.HasPrefix(token.Text, "handoff/") {
					return "site " + strings.Join(keys, " ") + " binds " + token.Text + ", a SO_REUSEPORT socket that any process of its user can share: write bind handoff/<host>"
				}
			}
		}
		if binds == 0 {
			return "site " + strings.Join(keys, " ") + " has no bind handoff/<host>: Caddy listens on a SO_REUSEPORT socket that any process of its user can share"
		}
	}
	return ""
}

func allMatch(texts []string, re *regexp.Regexp) bool {
	for _, text := range texts {
		if !re.MatchString(text) {
			return false
		}
	}
	return true
}

// TestListensWithoutHandoff shows what the snippet check accepts and
// refuses.
func TestListensWithoutHandoff(t *testing.T) {
	for text, refused := range map[string]bool{
		":8080 {\n\tbind handoff/127.0.0.1\n\trespond ok\n}\n":           false,
		":9090 {\n\tbind handoff/0.0.0.0\n}\n":                           false,
		"entra_token [<matcher>] <application> {\n\theader <name>\n}\n":  false,
		"application partner-api api://partner/.default {\n\tx y\n}\n":   false,
		":8080 {\n\tbind 127.0.0.1\n}\n":                                 true,
		":8080 {\n\tbind handoff/127.0.0.1 127.0.0.1\n}\n":               true,
		"127.0.0.1:8080 {\n\trespond ok\n}\n":                            true,
		":8080 {\n\trespond ok\n}\n":                                     true,
		"localhost:9180 {\n\tmetrics\n}\n":                               true,
		":8080 {\n\tbind handoff/127.0.0.1\n}\n:9180 {\n\tmetrics\n}\n":  true,
		"http://127.0.0.1:8080 {\n\tbind tcp/127.0.0.1\n}\n":             true,
		"# a comment\n:8080 {\n\tbind handoff/127.0.0.1 # trailing\n}\n": false,
	} {
		if got := listensWithoutHandoff(text) != ""; got != refused {
			t.Errorf("listensWithoutHandoff(%q) refused = %v, want %v", text, got, refused)
		}
	}
}
