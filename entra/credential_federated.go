package entra

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// maxFederatedTokenBytes bounds what is read of a federated token file.
const maxFederatedTokenBytes = 64 << 10

// ErrFederatedTokenUnavailable means the federated token file could not be
// read or was empty: transient, as its writer may be rotating it.
var ErrFederatedTokenUnavailable = errors.New("entra: federated token file unavailable")

// Environment variables read by WorkloadIdentityFromEnv, as the
// azure-workload-identity webhook sets them.
const (
	EnvFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"
	EnvClientID           = "AZURE_CLIENT_ID"
	EnvTenantID           = "AZURE_TENANT_ID"
	EnvAuthorityHost      = "AZURE_AUTHORITY_HOST"
)

// federatedCredential sends the content of a file, read for every request,
// as the client assertion.
type federatedCredential struct {
	formCredential
	path   string
	origin string // where path came from, for errors: federatedTokenFileOrigin
	digest *tokenDigestCache
}

// federatedTokenFileOrigin names where cfg's federated token file path
// came from: the option, or the workload identity's variable.
func federatedTokenFileOrigin(cfg Config) string {
	if cfg.FederatedTokenFileFromEnv {
		return EnvFederatedTokenFile
	}
	return "federated_token_file"
}

// checkFederatedTokenFile is CheckFilePath of cfg's federated token file,
// its error naming where the path came from.
func checkFederatedTokenFile(cfg Config) error {
	if !cfg.FederatedTokenFileFromEnv {
		return CheckFilePath("federated_token_file", cfg.FederatedTokenFile)
	}
	if looksLikeContent(cfg.FederatedTokenFile) {
		return &ConfigError{Field: "workload_identity", Reason: EnvFederatedTokenFile + " holds what looks like a file's " +
			"content, not the path of the token file"}
	}
	return nil
}

func (f federatedCredential) newRequest(ctx context.Context, tr tokenRequest) (*http.Request, []string, error) {
	assertion, err := readFederatedToken(f.path, f.origin)
	if err != nil {
		return nil, nil, &RequestError{Err: err}
	}
	return f.postAssertion(ctx, tr, assertion)
}

func (federatedCredential) kind() string { return "federated_token" }

// fingerprint is the file's path: its content rotates all the time, and
// every valid content is the same credential (tokenDigest tells them apart
// for FailureFingerprint).
func (f federatedCredential) fingerprint() string { return f.path }

// tokenDigest is a digest of the token in the file now, "" while the file
// cannot be read. The file is read again only when a stat of it differs
// from the last (the kubelet replaces it whole) or it changed in the last
// few seconds (a file written twice within the clock's tick may keep its
// modification time and size): paused requests may ask for it each
// (on-behalf-of backoffs), a crafted token's too.
func (f federatedCredential) tokenDigest() string {
	info, err := os.Stat(f.path)
	if err != nil {
		return ""
	}
	f.digest.mu.Lock()
	defer f.digest.mu.Unlock()
	if last := f.digest.info; last != nil && os.SameFile(last, info) && last.ModTime().Equal(info.ModTime()) &&
		last.Size() == info.Size() && time.Since(info.ModTime()) > recentlyWritten {
		return f.digest.value
	}
	token, err := readFederatedToken(f.path, f.origin)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256([]byte(token))
	f.digest.info, f.digest.value = info, hex.EncodeToString(sum[:])
	return f.digest.value
}

// recentlyWritten is how long after its modification time a file is read
// again whatever its stat says.
const recentlyWritten = 2 * time.Second

// tokenDigestCache is tokenDigest's last digest and the stat it was read
// at.
type tokenDigestCache struct {
	mu    sync.Mutex
	info  os.FileInfo
	value string
}

// readFederatedToken reads the token, trimmed. Errors name where the path
// came from (origin: federatedTokenFileOrigin), neither the path (see
// FileErrorKind) nor the content.
func readFederatedToken(path, origin string) (string, error) {
	unavailable := func(fault string) error {
		return fmt.Errorf("%w: %s: %s", ErrFederatedTokenUnavailable, origin, fault)
	}
	file, err := os.Open(path)
	if err != nil {
		return "", unavailable(FileErrorKind(err))
	}
	defer file.Close()
	content, err := io.ReadAll(io.LimitReader(file, maxFederatedTokenBytes+1))
	token := strings.TrimSpace(string(content))
	switch {
	case err != nil:
		return "", unavailable(FileErrorKind(err))
	case len(content) > maxFederatedTokenBytes:
		return "", unavailable("the file is larger than 64 KiB")
	case token == "":
		return "", unavailable("the file is empty")
	case !isVisibleASCII(token):
		return "", unavailable("the file does not hold a token (unexpected characters)")
	}
	return token, nil
}

// WorkloadIdentityFromEnv returns the Config of a workload identity
// (Caddyfile workload_identity) from the environment read by getenv, as
// azidentity does: AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and
// AZURE_TENANT_ID are required (a *ConfigError names the missing one),
// AZURE_AUTHORITY_HOST is optional (default DefaultAuthorityHost).
// NewClient validates the rest.
func WorkloadIdentityFromEnv(getenv func(string) string) (Config, error) {
	cfg := Config{AuthorityHost: strings.TrimSpace(getenv(EnvAuthorityHost))}
	for _, v := range []struct {
		name string
		dest *string
	}{{EnvFederatedTokenFile, &cfg.FederatedTokenFile}, {EnvClientID, &cfg.ClientID}, {EnvTenantID, &cfg.TenantID}} {
		if *v.dest = strings.TrimSpace(getenv(v.name)); *v.dest == "" {
			return Config{}, &ConfigError{Field: "workload_identity", Reason: v.name + " is not set"}
		}
	}
	cfg.FederatedTokenFileFromEnv = true
	return cfg, nil
}
