package binding

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

func TestVerifyStoredLearnsAManagedIdentityFromItsOwnToken(t *testing.T) {
	// An endpoint of this run's own: what is learned is kept per identity
	// for the process's life (go test -count=N runs in one process).
	endpoint := fmt.Sprintf("http://127.0.0.1:1/metadata/identity/oauth2/token?run=%d", time.Now().UnixNano())
	newClient := func() *entra.Client {
		c, err := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: endpoint}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	identity := tokenIdentityFor(newClient())
	if tokenIdentityFor(newClient()) != identity {
		t.Fatal("two clients of one identity got two TokenIdentities: a reload would forget what was learned")
	}
	enc := base64.RawURLEncoding
	jwt := func(payload string) string {
		return enc.EncodeToString([]byte(`{"alg":"RS256"}`)) + "." + enc.EncodeToString([]byte(payload)) + ".sig"
	}
	ours := jwt(`{"tid":"72f988bf-86f1-41af-91ab-2d7cd011db47","appid":"0e5e3f9c-1111-4a2b-9c3d-123456789abc"}`)
	theirs := jwt(`{"tid":"f8cdef31-a31e-4b4a-93e4-5f571e91255a","appid":"0e5e3f9c-1111-4a2b-9c3d-123456789abc"}`)
	verify := verifyStoredFunc(identity, []string{"https://graph.microsoft.com/.default"}, new(learnedAudience), nil)
	rec := func(token string) tokencache.Record {
		return tokencache.Record{AccessToken: token, AccessTokenExpiresAt: time.Now().Add(time.Minute)}
	}

	if err := verify(rec(ours)); !errors.Is(err, tokencache.ErrUnverifiable) {
		t.Errorf("before the first own token: %v, want ErrUnverifiable", err)
	}
	fetch := learningFetch(func(context.Context) (tokencache.Fetched, error) {
		return tokencache.Fetched{AccessToken: ours, ExpiresAt: time.Now().Add(time.Hour)}, nil
	}, identity, new(learnedAudience), nil)
	if _, err := fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := verify(rec(ours)); err != nil {
		t.Errorf("after the first own token: %v, want nil", err)
	}
	if err := verify(rec(theirs)); err == nil || errors.Is(err, tokencache.ErrUnverifiable) {
		t.Errorf("another tenant's token: %v, want a mismatch", err)
	}
	if err := verify(rec("opaque")); !errors.Is(err, tokencache.ErrUnverifiable) {
		t.Errorf("an opaque token: %v, want ErrUnverifiable", err)
	}
}
