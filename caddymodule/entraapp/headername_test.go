package entraapp

import "testing"

func TestCheckHeaderName(t *testing.T) {
	for _, name := range []string{"Proxy-Authorization", "connection", "Trailer", "Host", "content-length",
		"Transfer-Encoding", "Te", "Upgrade", "Keep-Alive", "X-Forwarded-For", "bad header", ""} {
		if _, err := CheckHeaderName("header", name); err == nil {
			t.Errorf("header %q accepted", name)
		}
	}
	for name, want := range map[string]string{"Authorization": "Authorization", "x-api-token": "X-Api-Token",
		"Ocp-Apim-Subscription-Key": "Ocp-Apim-Subscription-Key"} {
		if got, err := CheckHeaderName("header", name); err != nil || got != want {
			t.Errorf("header %q: got %q, %v; want %q", name, got, err, want)
		}
	}
}
