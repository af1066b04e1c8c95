package integration

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
)

// basicSecrets hold what application/x-www-form-urlencoded changes ('+',
// '%', ':', '=', spaces, non-ASCII), by application name. Placeholders are
// trimmed, so no secret here starts or ends with a space.
var basicSecrets = map[string]string{
	"plus":     "a+b+c~Zx8Q",
	"percent":  "100%25%-sure%",
	"colon":    "user:pass:word",
	"equals":   "base64ish==",
	"spaces":   "inner and more spaces",
	"nonascii": "clé-секрет-秘密-🔑",
	"all":      "+%:= é&?/#",
}

// With client_auth basic, the real Caddy presents each application's
// awkward secret in an HTTP Basic header that the emulator decodes as RFC
// 6749 section 2.3.1 says, so every route gets its application's token;
// a wrong secret answers 502 MICROSOFT_TOKEN_REQUEST_FAILED; neither the
// secrets nor their Basic encodings reach the logs.
func TestClientSecretBasicWithTheRealSidecar(t *testing.T) {
	emulator, authority := newEmulator(t)
	up := newUpstream(t)
	names := make([]string, 0, len(basicSecrets))
	for name := range basicSecrets {
		names = append(names, name)
	}
	sort.Strings(names)

	var block strings.Builder
	block.WriteString("authority_host {env.TEST_AUTHORITY_HOST}\ntenant_id {env.TEST_TENANT_ID}\n" +
		"client_id {env.TEST_CLIENT_ID}\nclient_secret {env.TEST_CLIENT_SECRET}\nclient_auth basic\n" +
		"application default-api api://default/.default\n")
	env := []string{"TEST_AUTHORITY_HOST=" + authority, "TEST_TENANT_ID=" + emulator.TenantID(),
		"TEST_CLIENT_ID=" + testClientID, "TEST_CLIENT_SECRET=" + basicSecrets["all"], "TEST_UPSTREAM=" + up.server.URL}
	emulator.AddClient(testClientID, basicSecrets["all"])
	routes := []route{{Path: "/default", Application: "default-api"}, {Path: "/wrong", Application: "wrong-api"}}
	clientIDs := map[string]string{}
	var secrets []string
	for i, name := range names {
		clientID := fmt.Sprintf("22222222-0000-4000-8000-%012d", i)
		clientIDs[name] = clientID
		emulator.AddClient(clientID, basicSecrets[name])
		upper := strings.ToUpper(name)
		// The application's own client and secret, at the default token
		// endpoint: it takes the default identity's client_auth basic.
		fmt.Fprintf(&block, "application %s api://%s/.default {\nclient_id {env.TEST_ID_%s}\nclient_secret {env.TEST_SECRET_%s}\n}\n", name, name, upper, upper)
		env = append(env, "TEST_ID_"+upper+"="+clientID, "TEST_SECRET_"+upper+"="+basicSecrets[name])
		routes = append(routes, route{Path: "/" + name, Application: name})
		secrets = append(secrets, basicSecrets[name], url.QueryEscape(basicSecrets[name]),
			base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(clientID)+":"+url.QueryEscape(basicSecrets[name]))))
	}
	const wrongClientID = "33333333-0000-4000-8000-000000000000"
	emulator.AddClient(wrongClientID, "the-right-one")
	block.WriteString("application wrong-api api://wrong/.default {\nclient_id " + wrongClientID +
		"\nclient_secret {env.TEST_WRONG_SECRET}\nclient_auth basic\n}\n")
	env = append(env, "TEST_WRONG_SECRET=wrong+secret: é")
	replica := startSidecar(t, sidecarConfig(block.String(), routes...), env...)

	var tokens []string
	for _, name := range append([]string{"default"}, names...) {
		token := tokenVia(t, replica, up, "/"+name+"/x")
		claims, err := emulator.Verify(token)
		wantClient := clientIDs[name]
		if name == "default" {
			wantClient = testClientID
		}
		if err != nil || claims.AppID != wantClient || claims.Audience != "api://"+name {
			t.Errorf("%s: token claims %+v, %v; want appid %s", name, claims, err, wantClient)
		}
		tokens = append(tokens, token)
	}
	if got, want := emulator.BasicAuthentications(), int64(len(names)+1); got != want {
		t.Errorf("token requests with Basic = %d, want %d (one per application)", got, want)
	}

	status, body := get(t, replica.URL+"/wrong/x", nil)
	if status != http.StatusBadGateway || !strings.Contains(body, "MICROSOFT_TOKEN_REQUEST_FAILED") || !strings.Contains(body, "7000215") {
		t.Errorf("wrong secret: status %d, body %s; want 502 MICROSOFT_TOKEN_REQUEST_FAILED with AADSTS7000215", status, body)
	}
	logs := replica.logs()
	assertNoSecretsIn(t, logs, append(secrets, "wrong+secret: é", url.QueryEscape("wrong+secret: é"))...)
	assertNoSecrets(t, logs, tokens...)
}
