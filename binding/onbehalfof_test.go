package binding

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

func TestRejectedUserTokenTellsTheUsersFailureFromTheApplications(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		remember time.Duration
		rejected bool
	}{
		{"invalid grant", &entra.RequestError{OnBehalfOf: true, StatusCode: 400, Code: "invalid_grant", ErrorCodes: []int{50013}},
			userRefusalMemory, true},
		{"claims challenge", &entra.RequestError{OnBehalfOf: true, StatusCode: 400, Code: "invalid_grant", ErrorCodes: []int{50076},
			Claims: `{"access_token":{}}`}, userRefusalMemory, true},
		{"consent, wrapped", fmt.Errorf("exchanging: %w", &entra.RequestError{OnBehalfOf: true, StatusCode: 400,
			Code: "invalid_grant", ErrorCodes: []int{65001}}), ConsentRetry, true},
		{"invalid client", &entra.RequestError{OnBehalfOf: true, StatusCode: 401, Code: "invalid_client", ErrorCodes: []int{7000215}}, 0, false},
		{"throttled", &entra.RequestError{OnBehalfOf: true, StatusCode: 429}, 0, false},
		{"unavailable", &entra.RequestError{OnBehalfOf: true, StatusCode: 503}, 0, false},
		{"client credentials", &entra.RequestError{StatusCode: 400, Code: "invalid_grant"}, 0, false},
		{"other error", errors.New("boom"), 0, false},
	}
	for _, tt := range tests {
		remember, rejected := RejectedUserToken(tt.err)
		if remember != tt.remember || rejected != tt.rejected {
			t.Errorf("%s: got %s, %v; want %s, %v", tt.name, remember, rejected, tt.remember, tt.rejected)
		}
	}
}
