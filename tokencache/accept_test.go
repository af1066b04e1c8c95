package tokencache

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// compactJWS is a compact JWS of header and claims with a fake signature:
// what a writer of the store can make without a signing key.
func compactJWS(t testing.TB, header string, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString(payload) + ".c2lnbmF0dXJl"
}

// jwsExpiring is a plausible signed JWT expiring at exp, issued at iat.
func jwsExpiring(t testing.TB, id string, iat, exp time.Time) string {
	return compactJWS(t, `{"alg":"RS256","typ":"JWT"}`, map[string]any{"jti": id, "iat": iat.Unix(), "exp": exp.Unix()})
}

// plantRecord writes rec under the application's key, as any writer of a
// plaintext Redis can.
func plantRecord(t *testing.T, mr *miniredis.Miniredis, rec Record) string {
	t.Helper()
	key := RecordKey(DefaultKeyPrefix, testApp("graph-api", nil))
	rec.ID, rec.ApplicationName, rec.Scope = key, "graph-api", testScope
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := mr.Set(key, string(raw)); err != nil {
		t.Fatal(err)
	}
	return key
}

// jwsFetcher hands out signed-looking JWTs living lifetime on clock.
type jwsFetcher struct {
	t        testing.TB
	clock    *fakeClock
	lifetime time.Duration
	calls    atomic.Int64
}

func (f *jwsFetcher) Fetch(context.Context) (Fetched, error) {
	n := f.calls.Add(1)
	now := f.clock.Now()
	// expires_in counted on a clock 20 s behind the issuer's.
	return Fetched{AccessToken: jwsExpiring(f.t, fmt.Sprintf("own-%d", n), now, now.Add(f.lifetime)),
		ExpiresAt: now.Add(f.lifetime - 20*time.Second)}, nil
}

const tamperWarning = "ignoring a token record that fails the token checks; possible tampering"

func TestStoredRecordFailingTheTokenChecksIsAMiss(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	expiry := now.Add(time.Hour).Truncate(time.Second)
	claims := map[string]any{"tid": "tenant-1", "appid": "client-1", "iat": now.Unix(), "exp": expiry.Unix()}
	withoutExp := map[string]any{"tid": "tenant-1", "appid": "client-1", "iat": now.Unix()}
	enc := base64.RawURLEncoding
	tests := []struct {
		name, token string
		expiry      time.Time
		sealed      bool
		wantErr     string
	}{
		{name: "alg none", token: compactJWS(t, `{"alg":"none","typ":"JWT"}`, claims), wantErr: "alg none"},
		{name: "alg none, sealed", token: compactJWS(t, `{"alg":"none"}`, claims), sealed: true, wantErr: "alg none"},
		{name: "no alg", token: compactJWS(t, `{"typ":"JWT"}`, claims), wantErr: "alg none"},
		{name: "unreadable header", token: "bm90IGpzb24." + enc.EncodeToString([]byte(`{"exp":1}`)) + ".c2ln", wantErr: "cannot be read"},
		{name: "unreadable payload", token: enc.EncodeToString([]byte(`{"alg":"RS256"}`)) + ".!!.c2ln", wantErr: "cannot be read"},
		{name: "JWE", token: "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", wantErr: "JWE"},
		{name: "no exp", token: compactJWS(t, `{"alg":"RS256"}`, withoutExp), wantErr: "no exp"},
		{name: "expiry after exp", token: compactJWS(t, `{"alg":"RS256"}`, claims), expiry: expiry.Add(2 * time.Second), wantErr: "differs from the token's exp"},
		{name: "expiry before exp", token: compactJWS(t, `{"alg":"RS256"}`, claims), expiry: expiry.Add(-5 * time.Minute), wantErr: "differs from the token's exp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			recordExpiry := expiry
			if !tc.expiry.IsZero() {
				recordExpiry = tc.expiry
			}
			rec := Record{AccessToken: tc.token, AccessTokenExpiresAt: recordExpiry, CreatedAt: now, UpdatedAt: now}
			var store redisTestStore
			if tc.sealed {
				// A holder of the key (or a replica's bug) wrote it: sealing
				// authenticates the writer, not the token.
				store = newEncryptedStore(t, mr, testKey(1))
				key := RecordKey(DefaultKeyPrefix, testApp("graph-api", nil))
				rec.ID = key
				if err := store.Set(t.Context(), key, &rec, time.Hour); err != nil {
					t.Fatal(err)
				}
			} else {
				plantRecord(t, mr, rec)
				store = newMiniredisStore(t, mr)
			}
			f := &prefixFetcher{clock: clock, prefix: "ours-"}
			// No VerifyStored: the token checks hold for every application.
			c, logs := newTestCache(t, store, clock, testApp("graph-api", f.Fetch))
			got, err := c.Token(t.Context(), "graph-api")
			if err != nil {
				t.Fatal(err)
			}
			if got.AccessToken != "ours-1" || f.calls.Load() != 1 {
				t.Fatalf("Token = %.20q after %d fetches, want the replica's own ours-1", got.AccessToken, f.calls.Load())
			}
			warnings := logs.FilterMessage(tamperWarning).All()
			if len(warnings) != 1 || !strings.Contains(fmt.Sprint(warnings[0].ContextMap()["error"]), tc.wantErr) {
				t.Fatalf("tampering warnings %v, want one naming %q", warnings, tc.wantErr)
			}
			assertNotLogged(t, logs, tc.token)
		})
	}

	t.Run("a plausible record is taken", func(t *testing.T) {
		mr := miniredis.RunT(t)
		token := compactJWS(t, `{"alg":"RS256"}`, claims)
		plantRecord(t, mr, Record{AccessToken: token, AccessTokenExpiresAt: expiry.Add(300 * time.Millisecond), CreatedAt: now, UpdatedAt: now})
		f := &prefixFetcher{clock: clock, prefix: "ours-"}
		c, logs := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", f.Fetch))
		if got, err := c.Token(t.Context(), "graph-api"); err != nil || got.AccessToken != token || f.calls.Load() != 0 {
			t.Fatalf("Token = %v after %d fetches, want the stored token", err, f.calls.Load())
		}
		if n := logs.FilterMessage(tamperWarning).Len(); n != 0 {
			t.Errorf("%d tampering warnings for a plausible record", n)
		}
	})
}

func TestStoredRecordLivingLongerThanOwnTokensIsAMiss(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	day := 24 * time.Hour
	record := func(t *testing.T, iat, updated, exp time.Time) Record {
		return Record{AccessToken: jwsExpiring(t, "planted", iat, exp), AccessTokenExpiresAt: exp, CreatedAt: updated, UpdatedAt: updated}
	}
	t.Run("before an own token: 24 hours", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			rec     Record
			wantErr string // "" for taken
		}{
			{"7 days away (the issue's forged record)", record(t, now, now, now.Add(7*day)), "longer than"},
			{"25 hours left", record(t, now, now, now.Add(25*time.Hour)), "longer than"},
			{"updated long ago, 25 hours of life", record(t, now.Add(-2*time.Hour), now.Add(-2*time.Hour), now.Add(23*time.Hour)), "longer than"},
			{"updated in the future", record(t, now, now.Add(2*time.Hour), now.Add(3*time.Hour)), "in the future"},
			{"issued long ago, exp far", Record{AccessToken: jwsExpiring(t, "x", now.Add(-30*time.Hour), now.Add(10*time.Hour)),
				AccessTokenExpiresAt: now.Add(10 * time.Hour), UpdatedAt: now}, "from its iat"},
			{"24 hours (a managed identity's)", record(t, now, now, now.Add(day)), ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				mr := miniredis.RunT(t)
				plantRecord(t, mr, tc.rec)
				f := &prefixFetcher{clock: clock, prefix: "ours-"}
				c, logs := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", f.Fetch))
				got, err := c.Token(t.Context(), "graph-api")
				if err != nil {
					t.Fatal(err)
				}
				if tc.wantErr == "" {
					if got.AccessToken != tc.rec.AccessToken {
						t.Fatal("a record within the bound was not taken")
					}
					h := c.handles["graph-api"]
					if next := h.Status().NextRefresh; next.IsZero() || next.After(now.Add(24*time.Hour)) {
						t.Errorf("refresh of the store-read record at %v, want within 24h", next)
					}
					return
				}
				if got.AccessToken != "ours-1" {
					t.Fatal("a record living too long was taken")
				}
				warnings := logs.FilterMessage(tamperWarning).All()
				if len(warnings) != 1 || !strings.Contains(fmt.Sprint(warnings[0].ContextMap()["error"]), tc.wantErr) {
					t.Fatalf("tampering warnings %v, want one naming %q", warnings, tc.wantErr)
				}
			})
		}
	})
	t.Run("after an own token of an hour: 90 minutes", func(t *testing.T) {
		mr := miniredis.RunT(t)
		f := &jwsFetcher{t: t, clock: clock, lifetime: time.Hour}
		c, logs := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", f.Fetch))
		if _, err := c.Token(t.Context(), "graph-api"); err != nil {
			t.Fatal(err)
		}
		// Another replica's token of 85 minutes is taken; one of 2 hours
		// (taken before this replica had a token) is not.
		h := c.handles["graph-api"]
		for _, tc := range []struct {
			life  time.Duration
			taken bool
		}{{85 * time.Minute, true}, {2 * time.Hour, false}} {
			rec := record(t, now, now, now.Add(tc.life))
			plantRecord(t, mr, rec)
			got, err := c.read(t.Context(), h)
			if err != nil {
				t.Fatal(err)
			}
			if taken := got != nil; taken != tc.taken {
				t.Errorf("record of %s: taken %v, want %v", tc.life, taken, tc.taken)
			}
		}
		if n := logs.FilterMessage(tamperWarning).Len(); n != 1 {
			t.Errorf("%d tampering warnings, want 1", n)
		}
	})
}

func TestOwnTokenIsRecordedWithItsJWTExpiry(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &jwsFetcher{t: t, clock: clock, lifetime: time.Hour}
	c, _ := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", f.Fetch))
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	exp := clock.Now().Add(time.Hour).Truncate(time.Second)
	if !rec.AccessTokenExpiresAt.Equal(exp) {
		t.Fatalf("recorded expiry %v, want the JWT's exp %v (expires_in said %v)", rec.AccessTokenExpiresAt, exp, clock.Now().Add(time.Hour-20*time.Second))
	}
	key := RecordKey(DefaultKeyPrefix, testApp("graph-api", nil))
	raw, err := mr.Get(key)
	if err != nil {
		t.Fatalf("own token not shared: %v", err)
	}
	var stored Record
	if err := json.Unmarshal([]byte(raw), &stored); err != nil || !stored.AccessTokenExpiresAt.Equal(exp) {
		t.Fatalf("stored expiry %v (%v), want %v", stored.AccessTokenExpiresAt, err, exp)
	}
	// Another replica takes it: its expiry passes the check.
	other := &jwsFetcher{t: t, clock: clock, lifetime: time.Hour}
	c2, logs := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", other.Fetch))
	if got, err := c2.Token(t.Context(), "graph-api"); err != nil || got.AccessToken != rec.AccessToken || other.calls.Load() != 0 {
		t.Fatalf("another replica: %v after %d fetches, want the shared token", err, other.calls.Load())
	}
	if n := logs.FilterMessage(tamperWarning).Len(); n != 0 {
		t.Errorf("%d tampering warnings for a replica's own record", n)
	}
}

func TestOwnUnsignedTokenIsNotShared(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	var calls atomic.Int64
	unsigned := func(context.Context) (Fetched, error) {
		n := calls.Add(1)
		exp := clock.Now().Add(time.Hour)
		return Fetched{AccessToken: compactJWS(t, `{"alg":"none"}`, map[string]any{"n": n, "exp": exp.Unix()}), ExpiresAt: exp}, nil
	}
	c, logs := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", unsigned))
	first, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.Token(t.Context(), "graph-api"); err != nil || again.AccessToken != first.AccessToken {
		t.Fatalf("the unsigned token is not cached in-process: %v", err)
	}
	if keys := mr.Keys(); len(keys) != 0 {
		for _, k := range keys {
			if strings.HasSuffix(k, ":token") {
				t.Fatalf("an unsigned own token was written to the store under %s", k)
			}
		}
	}
	if n := logs.FilterMessageSnippet("using it in this replica only").Len(); n != 1 {
		t.Errorf("said %d times that the own token is not shared, want once", n)
	}
	assertNotLogged(t, logs, first.AccessToken)
}
