package entra_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// The applications and identities of one authority share its connections:
// 50 clients in turn use one connection (each had a transport of its own
// before, so 50), and after a burst that opened several, the kept ones
// serve the next round without a new handshake.
func TestClientsOfAnAuthorityShareConnections(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	clients := make([]*entra.Client, 50)
	for i := range clients {
		id := fmt.Sprintf("00000000-0000-0000-0000-%012d", i)
		emu.AddClient(id, testSecret)
		if clients[i], err = entra.NewClient(entra.Config{
			TenantID: emu.TenantID(), ClientID: id, ClientSecret: testSecret, AuthorityHost: srv.URL,
		}); err != nil {
			t.Fatal(err)
		}
	}
	inTurn := func() {
		t.Helper()
		for _, c := range clients {
			if _, err := c.Token(context.Background(), []string{graphScope}); err != nil {
				t.Fatal(err)
			}
		}
	}
	inTurn()
	if got := emu.Connections(); got != 1 {
		t.Fatalf("50 clients in turn opened %d connections, want 1", got)
	}

	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for _, c := range clients[:20] {
		wg.Go(func() {
			if _, err := c.Token(context.Background(), []string{graphScope}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	afterBurst := emu.Connections()
	inTurn()
	if got := emu.Connections(); got != afterBurst {
		t.Errorf("after a burst, 50 requests in turn opened %d new connections, want 0 (idle ones kept per authority)", got-afterBurst)
	}
}
