package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// cae is an exchange function returning a JWT that lives life, as Graph's
// tokens for continuous access evaluation (client_capabilities cp1) do, up
// to about 28 hours.
func cae(t *testing.T, clock *fakeClock, life time.Duration, calls *atomic.Int64) FetchFunc {
	return func(context.Context) (Fetched, error) {
		n := calls.Add(1)
		exp := clock.Now().Add(life)
		return Fetched{AccessToken: jwsExpiring(t, fmt.Sprint(n), clock.Now(), exp), ExpiresAt: exp}, nil
	}
}

// The fleet shares a 26-hour CAE token: replica B uses A's entry, which
// lives longer than the 24 hours a client-credentials key allows.
func TestFleetSharesLongLivedCAEExchange(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a, b := fleetExchangers(t, mr, clock, true)
	var calls atomic.Int64
	exchange := cae(t, clock, 26*time.Hour, &calls)
	notAfter := clock.Now().Add(27 * time.Hour) // the user's own token is a CAE token too
	fromA, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, exchange)
	if err != nil {
		t.Fatal(err)
	}
	fromB, err := b.Exchange(t.Context(), testUserToken, testTenant, notAfter, exchange)
	if err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 || fromB.AccessToken != fromA.AccessToken {
		t.Errorf("a 26-hour CAE token exchanged on A: %d exchanges, B's token A's: %v; want 1 exchange, shared",
			n, fromB.AccessToken == fromA.AccessToken)
	}
}

// An entry living longer than any token Entra issues is refused, and said
// once per entry, not on every read.
func TestExchangedEntryTooLongLivedIsRefusedAndLoggedOnce(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a, _ := fleetExchangers(t, mr, clock, true)
	hashKey := DeriveExchangeKey([]byte("fleet secret"))
	keys := [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
	b, logs := newTestCache(t, newEncryptedStore(t, mr, keys...), clock)
	t.Cleanup(func() { _ = b.Close() })
	eb, err := b.NewExchanger(ExchangeOptions{Name: "graph-as-user", Identity: testOBOIdentity, Scopes: []string{testOBOScope}, HashKey: hashKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eb.Close)
	var calls atomic.Int64
	notAfter := clock.Now().Add(40 * time.Hour)
	if _, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, cae(t, clock, 31*time.Hour, &calls)); err != nil {
		t.Fatal(err)
	}
	d := eb.namer.digest(testUserToken)
	for range 3 {
		if _, ok, err := eb.read(t.Context(), exchangeCall{d: d, key: eb.key(d), userToken: testUserToken, notAfter: notAfter}); ok || err != nil {
			t.Fatalf("a 31-hour token read from the store: usable %v, %v; want refused", ok, err)
		}
	}
	if n := logs.FilterMessageSnippet("possible tampering").Len(); n != 1 {
		t.Errorf("%d warnings for one entry read 3 times, want 1", n)
	}
}

// An entry another replica wrote that VerifyShared refuses (another user's
// token under this user's entry) is not used: the replica exchanges on its
// own, and says so once per entry.
func TestSharedEntryRefusedByVerifySharedIsNotUsed(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a, _ := fleetExchangers(t, mr, clock, true)
	keys := [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
	b, logs := newTestCache(t, newEncryptedStore(t, mr, keys...), clock)
	t.Cleanup(func() { _ = b.Close() })
	var checked []string
	eb, err := b.NewExchanger(ExchangeOptions{Name: "graph-as-user", Identity: testOBOIdentity, Scopes: []string{testOBOScope},
		HashKey: DeriveExchangeKey([]byte("fleet secret")), VerifyShared: func(rec *Record, userToken string) error {
			checked = append(checked, userToken)
			return errors.New("the token is another user's (oid)")
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eb.Close)
	x := &exchangeCounter{clock: clock}
	notAfter := clock.Now().Add(2 * time.Hour)
	fromA, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil {
		t.Fatal(err)
	}
	fromB, err := eb.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil || fromB.AccessToken == fromA.AccessToken || x.calls.Load() != 2 {
		t.Fatalf("B: %v, took A's entry: %v, %d exchanges; want its own exchange", err, fromB.AccessToken == fromA.AccessToken, x.calls.Load())
	}
	if len(checked) == 0 || checked[0] != testUserToken {
		t.Errorf("VerifyShared was given %d user tokens, want the request's", len(checked))
	}
	if n := logs.FilterMessageSnippet("possible tampering").Len(); n != 1 {
		t.Errorf("%d warnings, want 1", n)
	}
}
