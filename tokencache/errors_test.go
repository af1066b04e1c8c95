package tokencache

import (
	"errors"
	"io"
	"net/http"
	"testing"
)

func TestNewError(t *testing.T) {
	for _, tc := range []struct {
		code   string
		status int
	}{
		{CodeApplicationNotFound, http.StatusNotFound},
		{CodeProviderNotConfigured, http.StatusInternalServerError},
		{CodeProviderInvalidConfig, http.StatusInternalServerError},
		{CodeTokenRequestFailed, http.StatusBadGateway},
		{"SOMETHING_ELSE", http.StatusInternalServerError},
	} {
		err := NewError(tc.code, "what happened", io.EOF)
		if err.Status != tc.status || StatusForCode(tc.code) != tc.status {
			t.Errorf("%s: status %d, want %d", tc.code, err.Status, tc.status)
		}
		if err.Error() != tc.code+": what happened" {
			t.Errorf("Error() = %q", err.Error())
		}
		if !errors.Is(err, io.EOF) {
			t.Errorf("%s does not unwrap to its cause", tc.code)
		}
	}
}
