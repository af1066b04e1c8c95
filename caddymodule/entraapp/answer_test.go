package entraapp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// TestAnswerFor: the status, code, message and Retry-After of each kind of
// token error (the codes and statuses tokencache's errors used to carry).
func TestAnswerFor(t *testing.T) {
	notFound := &answerError{Answer{Status: http.StatusNotFound, Code: CodeApplicationNotFound, Message: "what happened"}}
	for _, tc := range []struct {
		name string
		err  error
		want Answer
	}{
		{"application not configured", notFound, notFound.Answer},
		{"no token", &tokencache.Error{Message: "what happened", Err: io.EOF},
			Answer{Status: http.StatusBadGateway, Code: CodeTokenRequestFailed, Message: "what happened"}},
		{"paused", &tokencache.Error{Message: "what happened", RetryAfter: 30 * time.Second},
			Answer{Status: http.StatusServiceUnavailable, Code: CodeTokenRequestFailed, Message: "what happened", RetryAfter: 30 * time.Second}},
		{"permanent, paused for a forced refresh", &tokencache.Error{Message: "what happened", RetryAfter: time.Minute, Permanent: true},
			Answer{Status: http.StatusBadGateway, Code: CodeTokenRequestFailed, Message: "what happened", RetryAfter: time.Minute}},
		{"any other error", context.DeadlineExceeded,
			Answer{Status: http.StatusBadGateway, Code: CodeTokenRequestFailed, Message: context.DeadlineExceeded.Error()}},
	} {
		if got := AnswerFor(tc.err); got != tc.want {
			t.Errorf("%s: AnswerFor() = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if notFound.Error() != CodeApplicationNotFound+": what happened" {
		t.Errorf("Error() = %q", notFound.Error())
	}
	if err := (&tokencache.Error{Message: "what happened", Err: io.EOF}); !errors.Is(err, io.EOF) {
		t.Error("a token error does not unwrap to its cause")
	}
}
