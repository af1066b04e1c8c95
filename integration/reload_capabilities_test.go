package integration

import "testing"

// TestReloadDeclaringClientCapabilitiesGetsACapableToken: a reload adds
// client_capabilities cp1: the token injected from then on declares it
// (xms_cc), not the token fetched without it; and removing it again does
// not inject the capable token to a config that cannot answer its
// challenges.
func TestReloadDeclaringClientCapabilitiesGetsACapableToken(t *testing.T) {
	for _, store := range []struct{ name, block string }{{"memory", ""}, {"redis", redisStore}} {
		t.Run(store.name, func(t *testing.T) {
			f := newFleet(t)
			config := func(extra string) string {
				return operatorConfig(memoryIdentity+store.block+extra+"\napplication orders-api "+testScope, "", "orders-api")
			}
			capabilities := func(token string) []string {
				claims, err := f.emulator.Verify(token)
				if err != nil {
					t.Fatal(err)
				}
				return claims.Capabilities
			}
			replica := startSidecar(t, config(""), operatorEnv(f)...)
			if got := capabilities(tokenVia(t, replica, f.upstream, "/orders-api/a")); len(got) != 0 {
				t.Fatalf("capabilities %v without client_capabilities", got)
			}
			mustReload(t, replica, config("\nclient_capabilities cp1"))
			if got := capabilities(tokenVia(t, replica, f.upstream, "/orders-api/b")); len(got) != 1 || got[0] != "cp1" {
				t.Errorf("after declaring cp1, a token with capabilities %v, want [cp1]", got)
			}
			mustReload(t, replica, config(""))
			if got := capabilities(tokenVia(t, replica, f.upstream, "/orders-api/c")); len(got) != 0 {
				t.Errorf("after removing client_capabilities, a token with capabilities %v, want none", got)
			}
		})
	}
}
