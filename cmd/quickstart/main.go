// Command quickstart shows the sidecar injecting a token end to end on a
// machine with no Entra ID tenant: it starts the Entra emulator
// (entra/entratest) and a stand-in downstream API on loopback, runs Caddy with
// the entra module on Caddyfile.example (memory cache), sends one request as a
// legacy client would, and prints what the downstream API received.
//
// Usage, from the repository root:
//
//	go run ./cmd/quickstart [-config Caddyfile.example] [-once]
//
// Without -once the sidecar keeps serving on 127.0.0.1:8080 until Ctrl-C,
// with Caddy's admin API on a Unix socket in a new temporary directory
// (SIDECAR_ADMIN_SOCKET), whose path it prints.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	configPath := flag.String("config", "Caddyfile.example", "the sidecar's Caddyfile")
	once := flag.Bool("once", false, "exit after the demonstration request instead of serving until Ctrl-C")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	demo, err := startDemo(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
	defer demo.Close()

	report, err := demo.Request(ctx, "/graph/v1.0/me")
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
	fmt.Println(report)
	report, err = demo.RequestAsUser(ctx, "/graph-as-user/v1.0/me")
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
	fmt.Println()
	fmt.Println(report)
	if *once {
		return
	}
	fmt.Printf("\nThe sidecar is serving on %s. Try:\n\n\tcurl -s %s/orders/v1/orders\n\n"+
		"Caddy's admin API (config, reloads, metrics) is on a Unix socket only this user may open:\n\n"+
		"\tcurl -s --unix-socket %s http://localhost/config/\n\nCtrl-C stops it.\n",
		demo.SidecarURL, demo.SidecarURL, demo.AdminSocket)
	<-ctx.Done()
}
