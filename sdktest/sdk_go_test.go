package sdktest

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// TestGoSDKManagedIdentityCredentialAppService: azidentity's
// ManagedIdentityCredential, configured by the App Service environment
// alone, gets the emulator's token for the resource from the sidecar.
func TestGoSDKManagedIdentityCredentialAppService(t *testing.T) {
	f := newFleet(t)
	replica := f.startReplica(t)
	t.Setenv("IDENTITY_ENDPOINT", replica.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", testIdentityHeader)
	for _, name := range []string{"MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT", "AZURE_CLIENT_ID"} {
		t.Setenv(name, "")
	}
	credential, err := azidentity.NewManagedIdentityCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	token, err := credential.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{testScope}})
	if err != nil {
		t.Fatalf("GetToken: %v\nsidecar logs:\n%s", err, replica.proc.Output.String())
	}
	f.checkToken(t, token.Token)
	if left := time.Until(token.ExpiresOn); left < 50*time.Minute {
		t.Errorf("the SDK read an expiry %v away, want about an hour", left)
	}
	if got := f.emulator.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
	if got := replica.handedOut(t, "app_service"); got != 1 {
		t.Errorf("endpoint_tokens_total{app_service} = %d, want 1", got)
	}
	assertNoSecrets(t, replica.proc.Output.String(), token.Token)
}
