package entraapp

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-entra/caddy-entra/entra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "entra",
		Usage: "token <application> --config <file> [--adapter <name>] [--print-token] | check --config <file> [--adapter <name>]",
		Short: "Gets Entra ID tokens with a config's identities, to check a tenant setup",
		Long: `
Loads a config and requests tokens from Entra ID with its applications'
identities directly: not through a running server, and without Redis.

  caddy entra token <application> --config <file>
	requests a token for one application and prints its metadata (scope,
	identity, expiry, fingerprint, public claims such as roles). The token
	itself is printed only with --print-token.

  caddy entra check --config <file>
	does the same for every configured application and prints a table.

On failure they print the error code, the AADSTS numbers, the trace ID and a
hint, and exit with status 1. No secret, assertion or token is printed.
`,
		CobraFunc: func(cmd *cobra.Command) {
			token := &cobra.Command{
				Use:   "token <application> --config <file> [--adapter <name>] [--print-token]",
				Short: "Requests a token for one application and prints its metadata",
				Args:  cobra.ExactArgs(1),
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdEntraToken),
			}
			token.Flags().Bool("print-token", false, "Also print the access token itself")
			check := &cobra.Command{
				Use:   "check --config <file> [--adapter <name>]",
				Short: "Requests a token for every configured application and reports each",
				Args:  cobra.NoArgs,
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdEntraCheck),
			}
			for _, sub := range []*cobra.Command{token, check} {
				sub.Flags().StringP("config", "c", "", "Configuration file (required)")
				sub.Flags().StringP("adapter", "a", "", "Name of config adapter to apply")
				cmd.AddCommand(sub)
			}
		},
	})
}

// cliTimeout bounds every token request of the CLI.
const cliTimeout = 30 * time.Second

// cmdEntraToken is `caddy entra token`.
func cmdEntraToken(fl caddycmd.Flags) (int, error) {
	app, apps, err := loadCLIApplications(fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	name := fl.Arg(0)
	i := slices.IndexFunc(apps, func(app resolvedApplication) bool { return app.Name == name })
	if i < 0 {
		return 1, fmt.Errorf("%s: application %q is not configured (configured: %s)",
			CodeApplicationNotFound, name, app.configuredNames())
	}
	if apps[i].OnBehalfOf != nil {
		return 1, fmt.Errorf("application %q exchanges users' tokens (on_behalf_of): it has no token of its own "+
			"(caddy entra check tests its credential)", name)
	}
	result := requestToken(apps[i])
	if result.err != nil {
		printFailure(os.Stdout, result)
		return 1, fmt.Errorf("no token for application %q", name)
	}
	out, err := json.MarshalIndent(result.info, "", "  ")
	if err != nil {
		return 1, err
	}
	fmt.Println(string(out))
	if fl.Bool("print-token") {
		fmt.Println(result.accessToken)
	}
	return 0, nil
}

// cmdEntraCheck is `caddy entra check`.
func cmdEntraCheck(fl caddycmd.Flags) (int, error) {
	_, apps, err := loadCLIApplications(fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	table := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(table, "APPLICATION\tRESULT\tEXPIRES\tROLES\tDETAIL")
	var failures []tokenResult
	for _, app := range apps {
		result := requestToken(app)
		if result.err != nil {
			failures = append(failures, result)
			fmt.Fprintf(table, "%s\tFAILED\t-\t-\t%s\n", app.Name, failureSummary(result.err))
			continue
		}
		roles, audience := "-", "-"
		if c := result.info.Claims; c != nil {
			roles, audience = cmp.Or(strings.Join(c.Roles, ","), "-"), cmp.Or(c.Audience, "-")
		}
		fmt.Fprintf(table, "%s\tok\t%s\t%s\taud %s, fingerprint %s\n", app.Name,
			result.info.AccessTokenExpiresAt.Format(time.RFC3339), roles, audience, result.info.Fingerprint)
	}
	_ = table.Flush()
	for _, f := range failures {
		fmt.Println()
		printFailure(os.Stdout, f)
	}
	if len(failures) > 0 {
		return 1, fmt.Errorf("%d of %d applications got no token", len(failures), len(apps))
	}
	return 0, nil
}

// loadCLIApplications returns the config's entra app and its applications, resolved as a server would.
func loadCLIApplications(configFile, adapter string) (*App, []resolvedApplication, error) {
	if configFile == "" {
		return nil, nil, errors.New("--config is required")
	}
	raw, _, _, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		return nil, nil, fmt.Errorf("loading the config: %v", err)
	}
	var cfg struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, nil, fmt.Errorf("decoding the config: %v", err)
	}
	rawApp, ok := cfg.Apps["entra"]
	if !ok {
		return nil, nil, fmt.Errorf("%s: the config has no entra app (add an entra block to the global options)",
			CodeProviderNotConfigured)
	}
	app := new(App)
	if err := json.Unmarshal(rawApp, app); err != nil {
		return nil, nil, fmt.Errorf("decoding the entra app: %v", err)
	}
	s, err := app.resolveSettings(caddy.NewReplacer())
	if err != nil {
		return nil, nil, err
	}
	return app, s.applications, nil
}

// tokenResult is one application's token request, as the CLI reports it.
type tokenResult struct {
	info        tokenInfo
	accessToken string
	err         error
}

// requestToken asks the token endpoint for app's token.
func requestToken(app resolvedApplication) tokenResult {
	result := tokenResult{info: tokenInfo{
		ApplicationName: app.Name,
		Scope:           strings.Join(app.Scopes, " "),
		Identity:        clientInfoOf(app.Client),
	}}
	scopes := app.Scopes
	if app.OnBehalfOf != nil {
		// The exchange needs a user's token: check the credential alone.
		scopes = []string{resourceDefaultScope(app.Scopes[0])}
		result.info.Scope = scopes[0] + " (on_behalf_of: the credential only)"
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	token, err := app.Client.Token(ctx, scopes)
	if result.err = err; err != nil {
		return result
	}
	result.accessToken = token.AccessToken
	result.info.withToken(token.AccessToken, token.ExpiresAt)
	return result
}

// resourceDefaultScope is the .default scope of a delegated scope's
// resource (api://orders/Orders.Read -> api://orders/.default); a scope
// without one (User.Read) is Graph's.
func resourceDefaultScope(scope string) string {
	i := strings.LastIndex(scope, "/")
	if i < 0 || !strings.Contains(scope, "://") || i < strings.Index(scope, "://")+3 {
		return "https://graph.microsoft.com/.default"
	}
	return scope[:i] + "/.default"
}

// failureSummary is a failure in a few words, with its AADSTS code.
func failureSummary(err error) string {
	var re *entra.RequestError
	if errors.As(err, &re) {
		return re.Summary()
	}
	return err.Error()
}

// printFailure prints what an operator needs to look a failure up, with a
// hint for the common AADSTS errors.
func printFailure(w io.Writer, result tokenResult) {
	fmt.Fprintf(w, "%s: %s: %s\n", result.info.ApplicationName, CodeTokenRequestFailed, failureSummary(result.err))
	var re *entra.RequestError
	if !errors.As(result.err, &re) {
		return
	}
	var codes []string
	for _, code := range re.ErrorCodes {
		codes = append(codes, fmt.Sprintf("AADSTS%d", code))
	}
	status := ""
	if re.StatusCode != 0 {
		status = strconv.Itoa(re.StatusCode)
	}
	for _, line := range [][2]string{{"error", re.Code}, {"error_codes", strings.Join(codes, ", ")},
		{"status", status}, {"trace_id", re.TraceID}, {"correlation_id", re.CorrelationID},
		{"token_endpoint", result.info.Identity.TokenEndpoint}, {"hint", re.Hint()}} {
		if line[1] != "" || line[0] == "token_endpoint" {
			fmt.Fprintf(w, "  %-16s%s\n", line[0]+":", line[1])
		}
	}
}
