package tokencache

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestRecordRedactsToken(t *testing.T) {
	const token = "eyJhbGciOiJSUzI1NiJ9.secret-payload.signature"
	rec := Record{
		ID:                   "entra:{abc}:token",
		ApplicationName:      "graph-api",
		AccessToken:          token,
		AccessTokenExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		Scope:                testScope,
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		for _, arg := range []any{rec, &rec, []Record{rec}, map[string]*Record{"a": &rec}} {
			out := fmt.Sprintf(format, arg)
			if strings.Contains(out, token) || strings.Contains(out, "secret-payload") {
				t.Errorf("Sprintf(%q, %T) = %s: leaks the token", format, arg, out)
			}
		}
	}
	if out := fmt.Sprintf("%+v", rec); !strings.Contains(out, "AccessToken:"+redacted) || !strings.Contains(out, "graph-api") {
		t.Errorf("%%+v = %s, want the other fields and AccessToken:%s", out, redacted)
	}

	core, logs := observer.New(zapcore.DebugLevel)
	zap.New(core).Info("record", zap.Any("rec", rec), zap.Object("obj", rec))
	for _, entry := range logs.All() {
		if strings.Contains(fmt.Sprint(entry.ContextMap()), token) {
			t.Errorf("zap logs the token: %v", entry.ContextMap())
		}
	}

	// JSON keeps it: that is the store's format.
	raw, err := json.Marshal(rec)
	if err != nil || !strings.Contains(string(raw), token) {
		t.Errorf("json.Marshal() = %s, %v; want the token kept for the store", raw, err)
	}
}

func TestRecordJSONRoundTrip(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 123_000_000, time.UTC)
	rec := Record{ID: "k", ApplicationName: "a", AccessToken: "t", AccessTokenExpiresAt: at,
		Scope: "s1 s2", CreatedAt: at, UpdatedAt: at}
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"k","applicationName":"a","accessToken":"t","accessTokenExpiresAt":"2030-01-02T03:04:05.123Z",` +
		`"scope":"s1 s2","createdAt":"2030-01-02T03:04:05.123Z","updatedAt":"2030-01-02T03:04:05.123Z"}`
	if string(raw) != want {
		t.Errorf("json = %s\nwant   %s", raw, want)
	}
	var back Record
	if err := json.Unmarshal(raw, &back); err != nil || back != rec {
		t.Errorf("round trip = %+v, %v", back, err)
	}
}
