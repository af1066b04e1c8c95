package entratoken

import (
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfileHandler(t *testing.T) {
	tests := []struct {
		input      string
		want       string
		wantHeader string
		wantPurge  []int // nil: not set
		wantErr    string
	}{
		{input: "entra_token graph-api", want: "graph-api"},
		{input: "entra_token", wantErr: "an application name is required"},
		{input: "entra_token a b", wantErr: "wrong argument count"},
		{input: "entra_token a {\n header X-Api-Token\n purge_on_status 401 403\n }", want: "a", wantHeader: "X-Api-Token", wantPurge: []int{401, 403}},
		{input: "entra_token a {\n purge_on_status\n }", want: "a", wantPurge: []int{}},
		{input: "entra_token a {\n purge_on_status teapot\n }", wantErr: `purge_on_status: "teapot" is not an HTTP error status`},
		{input: "entra_token a {\n purge_on_status 200\n }", wantErr: `purge_on_status: "200" is not an HTTP error status`},
		{input: "entra_token a {\n header\n }", wantErr: "wrong argument count"},
		{input: "entra_token a {\n retry 3\n }", wantErr: "unrecognized entra_token option 'retry'"},
	}
	for _, tc := range tests {
		t.Run(tc.input, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || h.Application != tc.want || h.Header != tc.wantHeader {
				t.Fatalf("application = %q, header = %q, err = %v; want %q, %q", h.Application, h.Header, err, tc.want, tc.wantHeader)
			}
			if (h.PurgeOnStatus == nil) != (tc.wantPurge == nil) ||
				(h.PurgeOnStatus != nil && fmt.Sprint(*h.PurgeOnStatus) != fmt.Sprint(tc.wantPurge)) {
				t.Errorf("purge_on_status = %v, want %v", h.PurgeOnStatus, tc.wantPurge)
			}
		})
	}
}
