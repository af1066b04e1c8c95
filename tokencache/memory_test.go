package tokencache

import (
	"testing"
	"time"
)

func TestMemoryStoreHonoursTTLOnItsClock(t *testing.T) {
	clock := newFakeClock()
	store := newMemoryStore(clock.Now)
	ctx := t.Context()
	rec := &Record{ID: "k", AccessToken: "t"}
	if err := store.Set(ctx, "k", rec, time.Minute); err != nil {
		t.Fatal(err)
	}
	rec.AccessToken = "changed by the caller"
	got, err := store.Get(ctx, "k")
	if err != nil || got.AccessToken != "t" {
		t.Fatalf("Get() = %v, %v; want a copy of what was set", got, err)
	}
	got.AccessToken = "changed by a reader"
	if again, _ := store.Get(ctx, "k"); again.AccessToken != "t" {
		t.Error("a reader changed the stored record")
	}
	clock.Advance(time.Minute)
	if _, err := store.Get(ctx, "k"); err != ErrNotFound {
		t.Errorf("Get(expired) error = %v, want ErrNotFound", err)
	}

	if _, ok, _ := store.TryLock(ctx, "l", time.Second); !ok {
		t.Fatal("TryLock() not obtained")
	}
	clock.Advance(time.Second)
	if _, ok, _ := store.TryLock(ctx, "l", time.Second); !ok {
		t.Error("TryLock() after the lock expired not obtained")
	}
	if err := store.Set(ctx, "k", rec, 0); err == nil {
		t.Error("Set() with ttl 0 = nil error")
	}

	purged := []PurgedToken{{Fingerprint: [32]byte{1}}, {Fingerprint: [32]byte{2}}}
	if err := store.SetPurgeMark(ctx, "m", purged, time.Minute); err != nil {
		t.Fatal(err)
	}
	purged[0].Fingerprint[0] = 9
	if got, err := store.GetPurgeMark(ctx, "m"); err != nil || len(got) != 2 || got[0].Fingerprint != [32]byte{1} {
		t.Errorf("GetPurgeMark() = %x, %v; want a copy of what was set", got, err)
	}
	clock.Advance(time.Minute)
	if _, err := store.GetPurgeMark(ctx, "m"); err != ErrNotFound {
		t.Errorf("GetPurgeMark(expired) error = %v, want ErrNotFound", err)
	}
}
