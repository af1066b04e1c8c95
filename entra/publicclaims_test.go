package entra_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

func TestReadPublicClaims(t *testing.T) {
	now := time.Now().Truncate(time.Second).UTC()
	token := jwtWith(t, map[string]any{
		"aud": "https://graph.microsoft.com", "appid": claimsClient, "tid": claimsTenant,
		"roles": []string{"User.Read.All", "Mail.Send"}, "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(), "oid": "secret-free-but-not-shown",
	})
	pc, ok := entra.ReadPublicClaims(token)
	if !ok {
		t.Fatal("a JWT was not read")
	}
	if pc.Audience != "https://graph.microsoft.com" || pc.AppID != claimsClient || pc.TenantID != claimsTenant ||
		strings.Join(pc.Roles, ",") != "User.Read.All,Mail.Send" || !pc.ExpiresAt.Equal(now.Add(time.Hour)) ||
		!pc.IssuedAt.Equal(now) || !pc.NotBefore.Equal(now) {
		t.Errorf("claims = %+v", pc)
	}
	raw, err := json.Marshal(pc)
	if err != nil {
		t.Fatal(err)
	}
	signature := token[strings.LastIndex(token, ".")+1:]
	if strings.Contains(string(raw), signature) || strings.Contains(string(raw), token) {
		t.Error("the public claims hold the token or its signature")
	}
	v2, _ := entra.ReadPublicClaims(jwtWith(t, map[string]any{"aud": []string{otherClient}, "azp": claimsClient}))
	if v2.AppID != claimsClient || v2.AuthorizedParty != claimsClient || v2.Audience != otherClient {
		t.Errorf("v2 claims = %+v", v2)
	}
	if _, ok := entra.ReadPublicClaims("opaque-token"); ok {
		t.Error("an opaque token read as a JWT")
	}
}

func TestFingerprint(t *testing.T) {
	a, b := entra.Fingerprint("token-a"), entra.Fingerprint("token-b")
	if len(a) != 12 || a == b || a != entra.Fingerprint("token-a") {
		t.Errorf("fingerprints %q %q", a, b)
	}
	if entra.Fingerprint("") != "" {
		t.Error("an empty token has a fingerprint")
	}
}

func TestHintForCommonAADSTSErrors(t *testing.T) {
	for _, code := range []int{7000215, 7000222, 700016, 90002, 500011, 65001} {
		if hint := (&entra.RequestError{ErrorCodes: []int{50058, code}}).Hint(); hint == "" {
			t.Errorf("AADSTS%d has no hint", code)
		}
	}
	if hint := (&entra.RequestError{StatusCode: 503}).Hint(); hint != "" {
		t.Errorf("a 503 has hint %q", hint)
	}
}
