package entratest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	systemIdentity = "00000000-0000-4000-8000-00000000a001"
	userIdentity   = "00000000-0000-4000-8000-00000000a002"
)

func getJSON(t *testing.T, target string, header http.Header) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("response body is not JSON: %v", err)
	}
	return response{resp.StatusCode, resp.Header, body}
}

func TestIMDS(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	e, srv := startEmulator(t, Options{Now: clock.Now, TokenLifetime: time.Hour})
	e.AddManagedIdentity(systemIdentity, true)
	user := e.AddManagedIdentity(userIdentity, false)
	metadata := http.Header{"Metadata": {"true"}}
	imds := func(query url.Values) string { return srv.URL + IMDSPath + "?" + query.Encode() }

	r := getJSON(t, imds(url.Values{"api-version": {IMDSAPIVersion}, "resource": {"https://vault.azure.net"}}), metadata)
	if r.status != 200 {
		t.Fatalf("system identity: %d %v", r.status, r.body)
	}
	wantStrings := map[string]string{
		"client_id":      systemIdentity,
		"expires_in":     "3600",
		"ext_expires_in": "3600",
		"expires_on":     strconv.FormatInt(clock.Now().Add(time.Hour).Unix(), 10),
		"not_before":     strconv.FormatInt(clock.Now().Unix(), 10),
		"resource":       "https://vault.azure.net",
		"token_type":     "Bearer",
	}
	for field, want := range wantStrings {
		if got, _ := r.body[field].(string); got != want {
			t.Errorf("%s = %#v, want the string %q", field, r.body[field], want)
		}
	}
	claims, err := e.Verify(r.body["access_token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if claims.Audience != "https://vault.azure.net" || claims.AppID != systemIdentity {
		t.Errorf("aud, appid = %q, %q", claims.Audience, claims.AppID)
	}

	r = getJSON(t, imds(url.Values{"api-version": {IMDSAPIVersion}, "resource": {"api://orders"}, "client_id": {userIdentity}}), metadata)
	if r.status != 200 || r.body["client_id"] != userIdentity {
		t.Fatalf("user-assigned identity: %d %v", r.status, r.body)
	}
	if claims, err := e.Verify(r.body["access_token"].(string)); err != nil || claims.AppID != userIdentity || claims.Audience != "api://orders" {
		t.Errorf("user-assigned token: %v %+v", err, claims)
	}

	for name, tc := range map[string]struct {
		query  url.Values
		header http.Header
	}{
		"no Metadata header": {url.Values{"api-version": {IMDSAPIVersion}, "resource": {"r"}}, http.Header{}},
		"forwarded":          {url.Values{"api-version": {IMDSAPIVersion}, "resource": {"r"}}, http.Header{"Metadata": {"true"}, "X-Forwarded-For": {"10.0.0.1"}}},
		"no api-version":     {url.Values{"resource": {"r"}}, metadata},
		"old api-version":    {url.Values{"api-version": {"2017-09-01"}, "resource": {"r"}}, metadata},
		"no resource":        {url.Values{"api-version": {IMDSAPIVersion}}, metadata},
		"unknown identity":   {url.Values{"api-version": {IMDSAPIVersion}, "resource": {"r"}, "client_id": {"nobody"}}, metadata},
		"two identity IDs":   {url.Values{"api-version": {IMDSAPIVersion}, "resource": {"r"}, "client_id": {userIdentity}, "object_id": {user.ObjectID}}, metadata},
	} {
		r := getJSON(t, imds(tc.query), tc.header)
		if r.status != 400 || r.body["error"] != "invalid_request" || r.body["error_description"] == "" {
			t.Errorf("%s: %d %v", name, r.status, r.body)
		}
	}

	for name, query := range map[string]url.Values{
		"object_id":  {"object_id": {user.ObjectID}},
		"msi_res_id": {"msi_res_id": {strings.ToUpper(user.ResourceID)}}, // Azure resource IDs ignore case
	} {
		query.Set("api-version", IMDSAPIVersion)
		query.Set("resource", "r")
		if r := getJSON(t, imds(query), metadata); r.status != 200 || r.body["client_id"] != userIdentity {
			t.Errorf("by %s: %d %v", name, r.status, r.body)
		}
	}

	e.FailNext(1, Failure{Status: 503})
	if r := getJSON(t, imds(url.Values{"api-version": {IMDSAPIVersion}, "resource": {"r"}}), metadata); r.status != 503 {
		t.Errorf("FailNext: %d %v", r.status, r.body)
	}
	if e.TokenRequests() != 12 || e.IssuedTokens() != 4 {
		t.Errorf("TokenRequests, IssuedTokens = %d, %d; want 12, 4", e.TokenRequests(), e.IssuedTokens())
	}
}

func TestIMDSWithoutSystemIdentity(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	e.AddManagedIdentity(userIdentity, false)
	r := getJSON(t, srv.URL+IMDSPath+"?api-version="+IMDSAPIVersion+"&resource=r", http.Header{"Metadata": {"true"}})
	if r.status != 400 || r.body["error_description"] != "Identity not found" {
		t.Errorf("no system identity: %d %v", r.status, r.body)
	}
}

func TestAppServiceIdentityEndpoint(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	e, srv := startEmulator(t, Options{Now: clock.Now, TokenLifetime: time.Hour})
	e.AddManagedIdentity(systemIdentity, true)
	userMI := e.AddManagedIdentity(userIdentity, false)
	endpoint := func(query url.Values) string { return srv.URL + AppServicePath + "?" + query.Encode() }
	good := url.Values{"api-version": {AppServiceAPIVersion}, "resource": {"https://storage.azure.com"}}

	// Until SetIdentityHeader, nothing is accepted.
	if r := getJSON(t, endpoint(good), http.Header{"X-Identity-Header": {""}}); r.status != 401 {
		t.Fatalf("before SetIdentityHeader: %d %v", r.status, r.body)
	}
	e.SetIdentityHeader("identity-header-secret")
	header := http.Header{"X-Identity-Header": {"identity-header-secret"}}

	r := getJSON(t, endpoint(good), header)
	if r.status != 200 {
		t.Fatalf("system identity: %d %v", r.status, r.body)
	}
	if r.body["expires_on"] != strconv.FormatInt(clock.Now().Add(time.Hour).Unix(), 10) || r.body["resource"] != "https://storage.azure.com" ||
		r.body["token_type"] != "Bearer" || r.body["client_id"] != systemIdentity {
		t.Errorf("body = %v", r.body)
	}
	if _, ok := r.body["expires_in"]; ok {
		t.Error("App Service answers have no expires_in")
	}
	if claims, err := e.Verify(r.body["access_token"].(string)); err != nil || claims.AppID != systemIdentity || claims.Audience != "https://storage.azure.com" {
		t.Errorf("token: %v %+v", err, claims)
	}

	user := url.Values{"api-version": {AppServiceAPIVersion}, "resource": {"api://x"}, "client_id": {userIdentity}}
	if r := getJSON(t, endpoint(user), header); r.status != 200 || r.body["client_id"] != userIdentity {
		t.Errorf("user-assigned: %d %v", r.status, r.body)
	}
	for _, name := range []string{"principal_id", "object_id", "mi_res_id"} { // object_id: an alias of principal_id
		id := userMI.ObjectID
		if name == "mi_res_id" {
			id = userMI.ResourceID
		}
		byID := url.Values{"api-version": {AppServiceAPIVersion}, "resource": {"api://x"}, name: {id}}
		if r := getJSON(t, endpoint(byID), header); r.status != 200 || r.body["client_id"] != userIdentity {
			t.Errorf("user-assigned by %s: %d %v", name, r.status, r.body)
		}
	}

	for name, tc := range map[string]struct {
		query  url.Values
		header http.Header
		status int
	}{
		"wrong header":     {good, http.Header{"X-Identity-Header": {"guess"}}, 401},
		"IMDS api-version": {url.Values{"api-version": {IMDSAPIVersion}, "resource": {"r"}}, header, 400},
		"no resource":      {url.Values{"api-version": {AppServiceAPIVersion}}, header, 400},
		"unknown identity": {url.Values{"api-version": {AppServiceAPIVersion}, "resource": {"r"}, "client_id": {"nobody"}}, header, 400},
		"two identity IDs": {url.Values{"api-version": {AppServiceAPIVersion}, "resource": {"r"}, "principal_id": {userMI.ObjectID}, "object_id": {userMI.ObjectID}}, header, 400},
	} {
		r := getJSON(t, endpoint(tc.query), tc.header)
		if r.status != tc.status || r.body["statusCode"] != float64(tc.status) || r.body["message"] == "" {
			t.Errorf("%s: %d %v", name, r.status, r.body)
		}
	}
}
