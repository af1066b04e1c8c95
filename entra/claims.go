package entra

import (
	"bytes"
	"context"
	"encoding/json"
)

type challengeKey struct{}

// WithClaimsChallenge returns ctx carrying challenge, the JSON of a claims
// challenge a resource answered (continuous access evaluation): a token
// request made with it asks for a token that satisfies it. "" carries none.
func WithClaimsChallenge(ctx context.Context, challenge string) context.Context {
	return context.WithValue(ctx, challengeKey{}, challenge)
}

func claimsChallenge(ctx context.Context) string {
	challenge, _ := ctx.Value(challengeKey{}).(string)
	return challenge
}

// MergeClaims returns the claims parameter that answers challenge ("" for
// none) and declares capabilities: challenge with access_token.xms_cc set
// to {"values": capabilities}, as MSAL merges them; "" with neither. A
// challenge that is not a JSON object is an error.
func MergeClaims(challenge string, capabilities []string) (string, error) {
	claims := map[string]any{}
	if challenge != "" {
		dec := json.NewDecoder(bytes.NewReader([]byte(challenge)))
		dec.UseNumber()
		if err := dec.Decode(&claims); err != nil || claims == nil || dec.More() {
			return "", ErrClaimsChallenge
		}
	}
	if len(capabilities) > 0 {
		accessToken, ok := claims["access_token"].(map[string]any)
		if !ok {
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
