package integration

import (
	"strings"
)

// route is one handle_path block of a generated sidecar config.
type route struct {
	Path        string // "/orders" serves /orders/*
	Application string
	Options     string // lines inside the entra_token block, if any
}

// sidecarConfig builds a replica's Caddyfile template (see startSidecar): the
// global entra block holds entraBlock; each route injects its application's
// token and proxies to $TEST_UPSTREAM. entraBlock must not contain '%'.
func sidecarConfig(entraBlock string, routes ...route) string {
	var b strings.Builder
	b.WriteString("{\n\tadmin 127.0.0.1:%[2]d\n\tdebug\n\tentra {\n")
	for _, line := range strings.Split(strings.TrimSpace(entraBlock), "\n") {
		b.WriteString("\t\t" + strings.TrimSpace(line) + "\n")
	}
	b.WriteString("\t}\n}\n\n:%[1]d {\n\tbind 127.0.0.1\n")
	for _, r := range routes {
		b.WriteString("\thandle_path " + r.Path + "/* {\n\t\tentra_token " + r.Application)
		if r.Options != "" {
			b.WriteString(" {\n\t\t\t" + strings.ReplaceAll(strings.TrimSpace(r.Options), "\n", "\n\t\t\t") + "\n\t\t}")
		}
		b.WriteString("\n\t\treverse_proxy {$TEST_UPSTREAM}\n\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}
