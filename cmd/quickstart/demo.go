package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-entra/caddy-entra/caddymodule"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
	_ "github.com/caddy-entra/caddy-entra/handoff/caddyhandoff" // Caddyfile.example listens through handoff/
)

// Demo credentials of the emulator's one app registration. They are the
// emulator's own, valid nowhere else.
const (
	demoClientID     = "00000000-0000-4000-8000-0000000000c1"
	demoClientSecret = "emulator-secret"
)

// demo is a running emulator, downstream API and sidecar.
type demo struct {
	SidecarURL string
	// AdminSocket is the path of the Unix socket of Caddy's admin API, in a
	// directory of its own (mode 0700) that Close removes.
	AdminSocket string

	adminDir   string
	emulator   *entratest.Emulator
	entraSrv   *httptest.Server
	downstream *httptest.Server
}

// received is what the downstream API saw of one request. It shows the
// token's claims, not the token.
type received struct {
	Path          string         `json:"path"`
	Authorization int            `json:"authorization_headers"`
	Scheme        string         `json:"scheme"`
	Claims        map[string]any `json:"token_claims,omitempty"`
	Error         string         `json:"error,omitempty"`
}

// startDemo starts the emulator and the downstream API, points the sidecar's
// environment at them and loads the Caddyfile into Caddy.
func startDemo(configPath string) (*demo, error) {
	caddyfile, err := os.ReadFile(configPath)
	if err != nil {
		return nil, fmt.Errorf("reading the sidecar config (run from the repository root): %v", err)
	}
	// The example serves the admin API on a Unix socket, by default under
	// /run, which a user may not write: the demo's goes in a new directory
	// only this user may enter (os.MkdirTemp makes it 0700).
	adminDir, err := os.MkdirTemp("", "caddy-entra-admin-")
	if err != nil {
		return nil, fmt.Errorf("making the admin socket's directory: %v", err)
	}
	emulator, entraSrv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		os.RemoveAll(adminDir)
		return nil, err
	}
	emulator.AddClient(demoClientID, demoClientSecret)
	d := &demo{
		AdminSocket: filepath.Join(adminDir, "admin.sock"),
		adminDir:    adminDir,
		emulator:    emulator,
		entraSrv:    entraSrv,
	}
	d.downstream = httptest.NewServer(http.HandlerFunc(d.serveDownstream))

	port := os.Getenv("SIDECAR_PORT")
	if port == "" {
		port = "8080"
	}
	d.SidecarURL = "http://127.0.0.1:" + port
	for name, value := range map[string]string{
		"ENTRA_AUTHORITY_HOST": entraSrv.URL,
		"ENTRA_TENANT_ID":      emulator.TenantID(),
		"ENTRA_CLIENT_ID":      demoClientID,
		"ENTRA_CLIENT_SECRET":  demoClientSecret,
		"GRAPH_UPSTREAM":       d.downstream.URL,
		"ORDERS_UPSTREAM":      d.downstream.URL,
		"SIDECAR_PORT":         port,
		"SIDECAR_ADMIN_SOCKET": d.AdminSocket,
	} {
		os.Setenv(name, value)
	}

	adapter := caddyconfig.GetAdapter("caddyfile")
	config, warnings, err := adapter.Adapt(caddyfile, map[string]any{"filename": configPath})
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("adapting %s: %v", configPath, err)
	}
	for _, w := range warnings {
		fmt.Fprintf(os.Stderr, "%s:%d: %s\n", w.File, w.Line, w.Message)
	}
	if err := caddy.Load(config, true); err != nil {
		d.Close()
		return nil, fmt.Errorf("starting the sidecar: %v", err)
	}
	return d, nil
}

// serveDownstream stands in for Microsoft Graph: it reports the Authorization
// headers it got and the claims of the token, checked against the emulator.
func (d *demo) serveDownstream(w http.ResponseWriter, r *http.Request) {
	values := r.Header.Values("Authorization")
	got := received{Path: r.URL.Path, Authorization: len(values)}
	if len(values) == 1 {
		scheme, token, _ := strings.Cut(values[0], " ")
		got.Scheme = scheme
		claims, err := d.emulator.Verify(token)
		if err != nil {
			got.Error = "token rejected: " + err.Error()
		} else {
			got.Claims = map[string]any{
				"aud":        claims.Audience,
				"appid":      claims.AppID,
				"tid":        claims.TenantID,
				"iss":        claims.Issuer,
				"idtyp":      claims.IdentityType,
				"expires_at": claims.ExpiresAt.UTC().Format(time.RFC3339),
			}
			if claims.IdentityType == "user" {
				got.Claims["oid"], got.Claims["scp"] = claims.ObjectID, claims.Scopes
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(got)
}

// demoUserID is the object ID of the emulator's demo user.
const demoUserID = "00000000-0000-4000-8000-0000000000a1"

// Request sends one request through the sidecar as a legacy client would,
// with a stale Authorization header of its own, and describes the outcome.
func (d *demo) Request(ctx context.Context, path string) (string, error) {
	report, err := d.send(ctx, path, "Basic bGVnYWN5OmNyZWRlbnRpYWxz")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("GET %s%s (sent with Authorization: Basic ...)\n"+
		"The downstream API received one Authorization header, a bearer token the emulator verified,\n"+
		"the client's own header replaced. Token requests made: %d.\n%s",
		d.SidecarURL, path, d.emulator.TokenRequests(), report), nil
}

// RequestAsUser sends one request through the sidecar as a middle tier
// would on behalf of a signed-in user: with the user's token, which the
// emulator issues for the demo user (audience: the sidecar's client ID),
// and describes the outcome.
func (d *demo) RequestAsUser(ctx context.Context, path string) (string, error) {
	userToken, err := d.emulator.IssueUserToken(entratest.UserToken{ObjectID: demoUserID, Audience: demoClientID})
	if err != nil {
		return "", err
	}
	report, err := d.send(ctx, path, "Bearer "+userToken)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("GET %s%s (sent with the signed-in user's token for this client)\n"+
		"The downstream API received a token for the same user (oid), exchanged on the user's behalf.\n"+
		"On-behalf-of exchanges made: %d.\n%s",
		d.SidecarURL, path, d.emulator.OnBehalfOfRequests(), report), nil
}

// send sends GET path through the sidecar with authorization and returns
// what the downstream API received, indented.
func (d *demo) send(ctx context.Context, path, authorization string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.SidecarURL+path, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", authorization)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("calling the sidecar: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("sidecar answered %d: %s", resp.StatusCode, body)
	}
	var got received
	if err := json.Unmarshal(body, &got); err != nil {
		return "", fmt.Errorf("downstream answer is not JSON: %v", err)
	}
	if got.Authorization != 1 || got.Scheme != "Bearer" || got.Claims == nil {
		return "", errors.New("the downstream API did not receive exactly one valid bearer token: " + string(body))
	}
	pretty, _ := json.MarshalIndent(got, "", "  ")
	return string(pretty), nil
}

// adminOff is a config with no apps and no admin endpoint: caddy.Stop stops
// the apps but leaves the admin endpoint serving, loading this stops both.
const adminOff = `{"admin": {"disabled": true, "config": {"persist": false}}}`

// Close stops the sidecar and its admin endpoint, the downstream API and
// the emulator, and removes the admin socket's directory.
func (d *demo) Close() {
	_ = caddy.Load([]byte(adminOff), true)
	_ = caddy.Stop()
	if d.downstream != nil {
		d.downstream.Close()
	}
	d.entraSrv.Close()
	os.RemoveAll(d.adminDir)
}
