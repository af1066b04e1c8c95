package entra_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// TestErrorClasses drives each failure class through the real client and
// the emulator, and checks how it is classified and summarised.
func TestErrorClasses(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(emu *entratest.Emulator, cfg *entra.Config)
		permanent  bool
		summary    string
		retryMin   time.Duration
		retryMax   time.Duration
		wantInText []string
	}{
		{"invalid client secret", func(emu *entratest.Emulator, cfg *entra.Config) { emu.AddClient(testClientID, "another-secret") },
			true, "invalid client secret (AADSTS7000215)", 0, 0, []string{"invalid_client", "status 401", "trace_id="}},
		{"expired client secret", func(emu *entratest.Emulator, cfg *entra.Config) {
			emu.FailNext(1, entratest.Failure{Status: 401, Error: "invalid_client", ErrorCodes: []int{7000222}, Description: "The provided client secret keys for app are expired."})
		}, true, "client secret expired (AADSTS7000222)", 0, 0, []string{"invalid_client", "correlation_id="}},
		{"application not found", func(emu *entratest.Emulator, cfg *entra.Config) {
			cfg.ClientID = "99999999-0000-4000-8000-000000000000"
		},
			true, "application not found in tenant (AADSTS700016)", 0, 0, []string{"unauthorized_client"}},
		{"tenant not found", func(emu *entratest.Emulator, cfg *entra.Config) { cfg.TenantID = "contoso.onmicrosoft.com" },
			true, "tenant not found (AADSTS90002)", 0, 0, []string{"invalid_request"}},
		{"invalid scope", func(emu *entratest.Emulator, cfg *entra.Config) {
			emu.FailNext(1, entratest.Failure{Status: 400, Error: "invalid_scope", ErrorCodes: []int{70011}})
		}, true, "invalid scope (AADSTS70011)", 0, 0, []string{"invalid_scope"}},
		{"unknown AADSTS code in a 400", func(emu *entratest.Emulator, cfg *entra.Config) {
			emu.FailNext(1, entratest.Failure{Status: 400, Error: "invalid_grant", ErrorCodes: []int{123456}})
		}, true, "invalid grant (AADSTS123456)", 0, 0, []string{"invalid_grant"}},
		{"throttled, Retry-After seconds", func(emu *entratest.Emulator, cfg *entra.Config) {
			emu.FailNext(1, entratest.Failure{Status: 429, RetryAfter: "42"})
		}, false, "throttled (429)", 42 * time.Second, 42 * time.Second, []string{"retry_after=42s"}},
		{"throttled, Retry-After HTTP-date", func(emu *entratest.Emulator, cfg *entra.Config) {
			// The date is taken when the failure is armed, not before the
			// subtests run: a loaded machine would move it out of the window.
			emu.FailNext(1, entratest.Failure{Status: 429, RetryAfter: time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)})
		}, false, "throttled (429)", 85 * time.Second, 91 * time.Second, nil},
		{"unavailable", func(emu *entratest.Emulator, cfg *entra.Config) { emu.FailNext(1, entratest.Failure{Status: 503}) },
			false, "token endpoint unavailable (503)", 0, 0, []string{"temporarily_unavailable"}},
		{"temporarily_unavailable in a 400", func(emu *entratest.Emulator, cfg *entra.Config) {
			emu.FailNext(1, entratest.Failure{Status: 400, Error: "temporarily_unavailable"})
		}, false, "token endpoint temporarily unavailable (400)", 0, 0, nil},
		{"malformed 200", func(emu *entratest.Emulator, cfg *entra.Config) {
			emu.FailNext(1, entratest.Failure{Status: 200, Body: `{"token_type":"Bearer"}`})
		}, false, "malformed token response", 0, 0, []string{"access_token is missing"}},
		{"timeout", func(emu *entratest.Emulator, cfg *entra.Config) {
			emu.FailNext(1, entratest.Failure{Delay: time.Minute})
			cfg.Timeout = 50 * time.Millisecond
		}, false, "timed out", 0, 0, []string{"timed out after 50ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emu, srv, err := entratest.NewServer(entratest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			emu.AddClient(testClientID, testSecret)
			cfg := entra.Config{TenantID: emu.TenantID(), ClientID: testClientID, ClientSecret: testSecret, AuthorityHost: srv.URL}
			tt.setup(emu, &cfg)
			client, err := entra.NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = client.Token(context.Background(), []string{graphScope})
			reqErr := requestError(t, err)
			checkClass(t, reqErr, tt.permanent, tt.summary, tt.retryMin, tt.retryMax)
			for _, want := range tt.wantInText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q does not contain %q", err, want)
				}
			}
		})
	}
}

func checkClass(t *testing.T, reqErr *entra.RequestError, permanent bool, summary string, retryMin, retryMax time.Duration) {
	t.Helper()
	if reqErr.PermanentFailure() != permanent {
		t.Errorf("PermanentFailure() = %v, want %v (%v)", reqErr.PermanentFailure(), permanent, reqErr)
	}
	if reqErr.Summary() != summary {
		t.Errorf("Summary() = %q, want %q", reqErr.Summary(), summary)
	}
	if hint := reqErr.RetryAfterHint(); hint < retryMin || hint > retryMax {
		t.Errorf("RetryAfterHint() = %s, want within [%s, %s]", hint, retryMin, retryMax)
	}
	if msg := reqErr.Error(); !strings.HasPrefix(msg, "entra: token request failed: "+summary) {
		t.Errorf("message %q does not lead with the summary %q", msg, summary)
	}
	// The interfaces the cache's backoff reads.
	var classified interface {
		PermanentFailure() bool
		RetryAfterHint() time.Duration
	} = reqErr
	_ = classified
}

func TestConnectionRefusedIsTransient(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + listener.Addr().String() + "/token"
	listener.Close() // nothing listens any more
	client, err := entra.NewClient(entra.Config{ClientID: testClientID, ClientSecret: testSecret, TokenEndpoint: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Token(context.Background(), []string{graphScope})
	checkClass(t, requestError(t, err), false, "connection refused", 0, 0)
}

func TestNoScopeIsPermanent(t *testing.T) {
	_, client := newEmulator(t, 0)
	_, err := client.Token(context.Background(), nil)
	checkClass(t, requestError(t, err), true, "no scope", 0, 0)
}

func TestRequestErrorClassificationTable(t *testing.T) {
	tests := []struct {
		err       entra.RequestError
		permanent bool
		summary   string
	}{
		{entra.RequestError{StatusCode: 403}, true, "token endpoint answered (403)"},
		{entra.RequestError{StatusCode: 404}, false, "token endpoint answered (404)"},
		{entra.RequestError{StatusCode: 408}, false, "token endpoint answered (408)"},
		{entra.RequestError{StatusCode: 500, Code: "invalid_client"}, false, "token endpoint unavailable (500)"},
		{entra.RequestError{StatusCode: 401, ErrorCodes: []int{700027}}, true, "client assertion failed signature validation (certificate not registered or wrong key) (AADSTS700027)"},
		{entra.RequestError{StatusCode: 400, Code: "invalid_client", ErrorCodes: []int{700024}}, true, "client assertion is not within its valid time range (AADSTS700024)"},
		{entra.RequestError{StatusCode: 400, Code: "unsupported_grant_type"}, true, "unsupported grant type (400)"},
		{entra.RequestError{StatusCode: 200, Err: entra.ErrResponseTooLarge}, false, "token response too large"},
		{entra.RequestError{Err: context.DeadlineExceeded}, false, "timed out"},
		{entra.RequestError{Err: context.Canceled}, false, "canceled"},
	}
	for _, tt := range tests {
		if got := tt.err.PermanentFailure(); got != tt.permanent {
			t.Errorf("%+v: PermanentFailure() = %v, want %v", tt.err, got, tt.permanent)
		}
		if got := tt.err.Summary(); got != tt.summary {
			t.Errorf("%+v: Summary() = %q, want %q", tt.err, got, tt.summary)
		}
	}
}
