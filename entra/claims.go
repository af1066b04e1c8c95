package entra

import (
	"bytes"
	"encoding/json"
	"errors"
)

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
