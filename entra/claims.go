package entra

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
)

// challengeKey carries a claims challenge in a request's context.
type challengeKey struct{}

// WithClaimsChallenge returns ctx carrying challenge (the JSON of a claims
// challenge a resource answered, as continuous access evaluation does):
// a client-credentials token request made with it (Client.Token) asks for
// a token that satisfies it, merged with Config.ClientCapabilities as
// MergeClaims does. "" carries none.
func WithClaimsChallenge(ctx context.Context, challenge string) context.Context {
	return context.WithValue(ctx, challengeKey{}, challenge)
}

// claimsChallenge returns the challenge ctx carries, "" for none.
func claimsChallenge(ctx context.Context) string {
	challenge, _ := ctx.Value(challengeKey{}).(string)
	return challenge
}

// MergeClaims returns the claims request parameter of a token request that
// answers challenge (the JSON of a claims challenge, "" for none) and
// declares capabilities (Config.ClientCapabilities): challenge with
// access_token.xms_cc set to {"values": capabilities}, as MSAL merges them.
// With no capabilities it is challenge, compacted; with neither, "". A
// challenge that is not a JSON object is an error.
func MergeClaims(challenge string, capabilities []string) (string, error) {
	claims := map[string]any{}
	if challenge != "" {
		dec := json.NewDecoder(bytes.NewReader([]byte(challenge)))
		dec.UseNumber()
		if err := dec.Decode(&claims); err != nil || claims == nil || dec.More() {
			return "", errors.New("entra: the claims challenge is not a JSON object")
		}
	}
	if len(capabilities) > 0 {
		accessToken, _ := claims["access_token"].(map[string]any)
		if accessToken == nil {
			accessToken = map[string]any{}
		}
		accessToken["xms_cc"] = map[string]any{"values": capabilities}
		claims["access_token"] = accessToken
	}
	if len(claims) == 0 {
		return "", nil
	}
	merged, err := json.Marshal(claims)
	return string(merged), err
}
