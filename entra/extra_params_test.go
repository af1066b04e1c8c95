package entra_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddy-entra/caddy-entra/entra"
)

func TestTokenRequestParamsSent(t *testing.T) {
	forms := make(chan map[string][]string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		forms <- r.PostForm
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok","expires_in":3600,"token_type":"Bearer"}`))
	}))
	defer srv.Close()
	client, err := entra.NewClient(entra.Config{
		ClientID:      testClientID,
		ClientSecret:  testSecret,
		TokenEndpoint: srv.URL + "/oauth/token",
		ExtraParams:   map[string]string{"resource": "https://api.example", "audience": "orders"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Token(context.Background(), []string{"orders/.default"}); err != nil {
		t.Fatal(err)
	}
	form := <-forms
	for name, want := range map[string]string{"resource": "https://api.example", "audience": "orders", "client_secret": testSecret, "grant_type": "client_credentials", "scope": "orders/.default"} {
		if got := form[name]; len(got) != 1 || got[0] != want {
			t.Errorf("%s = %v, want [%s]", name, got, want)
		}
	}
}
