package entratokenendpoint

import (
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfileTokenEndpoint(t *testing.T) {
	for _, tc := range []struct {
		input   string
		want    TokenEndpoint
		wantErr string
	}{
		{input: "entra_token_endpoint imds", want: TokenEndpoint{Protocol: "imds"}},
		{input: "entra_token_endpoint record {\n secret {env.IDENTITY_HEADER}\n application a b\n application c\n }",
			want: TokenEndpoint{Protocol: "record", Secret: "{env.IDENTITY_HEADER}", Applications: []string{"a", "b", "c"}}},
		{input: "entra_token_endpoint app_service {\n secret {file./run/secret}\n resource https://vault.azure.net a\n allow_remote\n }",
			want: TokenEndpoint{Protocol: "app_service", Secret: "{file./run/secret}", Resources: map[string]string{"https://vault.azure.net": "a"}, AllowRemote: true}},
		{input: "entra_token_endpoint", wantErr: "a protocol is required"},
		{input: "entra_token_endpoint msi", wantErr: "unknown protocol 'msi'"},
		{input: "entra_token_endpoint imds extra", wantErr: "wrong argument count"},
		{input: "entra_token_endpoint record {\n secret a\n secret b\n }", wantErr: "secret: may appear only once"},
		{input: "entra_token_endpoint imds {\n resource r\n }", wantErr: "resource: want <resource> <application>"},
		{input: "entra_token_endpoint imds {\n resource r a\n resource r b\n }", wantErr: "resource r: mapped twice"},
		{input: "entra_token_endpoint imds {\n application\n }", wantErr: "wrong argument count"},
		{input: "entra_token_endpoint imds {\n allow_remote yes\n }", wantErr: "wrong argument count"},
		{input: "entra_token_endpoint imds {\n header X\n }", wantErr: "unrecognized entra_token_endpoint option 'header'"},
	} {
		t.Run(tc.input, func(t *testing.T) {
			var e TokenEndpoint
			err := e.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(e, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", e, err, tc.want)
			}
		})
	}
}

// TestSecretWithASpaceIsRefusedWithoutItsValue: an unquoted secret holding
// a space is two tokens; the error names the option and quotes neither.
func TestSecretWithASpaceIsRefusedWithoutItsValue(t *testing.T) {
	var e TokenEndpoint
	err := e.UnmarshalCaddyfile(caddyfile.NewTestDispenser("entra_token_endpoint record {\n secret s3cretHalfOne s3cretHalfTwo\n }"))
	if err == nil || !strings.Contains(err.Error(), "secret: want exactly one value (quote a value holding spaces)") {
		t.Fatalf("error = %v, want secret refused", err)
	}
	if strings.Contains(err.Error(), "s3cretHalf") {
		t.Errorf("error %q quotes the secret", err)
	}
}
