package entraapp

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/binding"
	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// onBehalfOfResults counts how on-behalf-of requests got their token
// (refusals before any exchange are requests_total's). No label holds a
// user's token or ID.
var onBehalfOfResults = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "caddy", Subsystem: "entra", Name: "on_behalf_of_total",
	Help: "Requests of on-behalf-of applications by application and how their token was had: hit, shared, exchanged, rejected, failed, busy.",
}, []string{"application", "result"})

type exchanger struct {
	*tokencache.Exchanger
	app        resolvedApplication
	homeTenant atomic.Pointer[string] // a domain tenant's ID once resolved
	poolKey    string                 // in exchangerPool
}

// exchangerPool keeps exchangers across reloads, as cachePool the caches:
// an application whose exchanges stay the same in the new config keeps its
// exchanged tokens, remembered refusals and per-tenant backoffs.
var exchangerPool = caddy.NewUsagePool()

type pooledExchanger struct{ *tokencache.Exchanger }

func (p pooledExchanger) Destruct() error {
	p.Close()
	return nil
}

// exchangerKey identifies an exchanger in exchangerPool by all that its
// entries depend on: its cache (cacheKey), the application's name (in
// records and metrics), identity, scopes, bounds and hash key, and the
// checks of users' tokens, which a hit skips; and by the credential, whose
// permanent failure pauses the exchanges (a rotated one must not wait it
// out). A reload that changes any of them starts afresh. Hashed, as the
// hash key and the credential's fingerprint are secret.
func exchangerKey(cacheKey string, opts tokencache.ExchangeOptions, rules entra.UserTokenRules, credential string) string {
	raw, _ := json.Marshal([]any{cacheKey, opts.Name, opts.Identity, opts.Scopes, // strings, numbers and bytes: cannot fail
		opts.MaxEntries, opts.Tenants, opts.HashKey, rules, credential})
	sum := sha256.Sum256(raw)
	return "entra-exchanger-" + hex.EncodeToString(sum[:])
}

// makeExchangers takes (or makes) every on-behalf-of application's pooled
// exchanger on cache, whose pool key is cacheKey. Entries are shared
// through Redis only under a key derived from the encryption key. What an
// exchanger keeps of the config that made it (OnExchange: the name's
// series; VerifyShared: the client ID's) is the same in every config that
// shares it, and each call's exchange function is its own config's.
func (a *App) makeExchangers(cache *tokencache.Cache, cacheKey string, s *settings) (map[string]*exchanger, error) {
	var hashKey []byte
	if s.cache.Redis != nil && len(s.cache.Redis.EncryptionKeys) > 0 {
		hashKey = tokencache.DeriveExchangeKey(s.cache.Redis.EncryptionKeys[0])
	}
	exchangers := make(map[string]*exchanger)
	for _, ra := range s.applications {
		if ra.OnBehalfOf == nil {
			continue
		}
		opts := binding.ExchangeOptions(ra.Name, ra.Client, ra.Scopes, ra.OnBehalfOf.MaxUsers,
			1+len(ra.OnBehalfOf.Rules.AllowedTenants), hashKey)
		results := onBehalfOfResults.MustCurryWith(prometheus.Labels{"application": ra.Name})
		opts.OnExchange = func(r tokencache.ExchangeResult) { results.WithLabelValues(string(r)).Inc() }
		key := exchangerKey(cacheKey, opts, ra.OnBehalfOf.Rules, ra.Client.CredentialFingerprint())
		value, _, err := exchangerPool.LoadOrNew(key, func() (caddy.Destructor, error) {
			e, err := cache.NewExchanger(opts)
			if err != nil {
				return nil, err
			}
			return pooledExchanger{e}, nil
		})
		if err != nil {
			releaseExchangers(exchangers)
			return nil, fmt.Errorf("application %s: %v", ra.Name, err)
		}
		exchangers[ra.Name] = &exchanger{Exchanger: value.(pooledExchanger).Exchanger, app: ra, poolKey: key}
	}
	for _, e := range exchangers {
		if header := e.app.OnBehalfOf.Header; !strings.EqualFold(header, "Authorization") {
			// Caddy's logs mask only Authorization, Cookie and Proxy-Authorization.
			a.logger.Warn("on_behalf_of header: Caddy's error and access logs show this header, which carries users' tokens; "+
				"delete it with a log filter (docs/on-behalf-of.md, the user's token in Caddy's logs) or use Authorization",
				zap.String("application", e.app.Name), zap.String("header", header))
		}
	}
	if len(exchangers) > 0 && s.cache.Redis != nil && hashKey == nil {
		a.logger.Warn("on-behalf-of tokens are not shared through Redis without encryption_key: " +
			"each replica exchanges users' tokens on its own and keeps them in memory only")
	}
	return exchangers, nil
}

// releaseExchangers gives up this config's hold on its exchangers: the last
// holder's Close stops an exchanger's watcher.
func releaseExchangers(exchangers map[string]*exchanger) {
	for _, e := range exchangers {
		_, _ = exchangerPool.Delete(e.poolKey) // Destruct never fails
	}
}

// UserTokenHeader returns the header the user's token comes in, and whether
// applicationName is an on-behalf-of application.
func (a *App) UserTokenHeader(applicationName string) (string, bool) {
	if e := a.exchangers[applicationName]; e != nil {
		return e.app.OnBehalfOf.Header, true
	}
	return "", false
}

// ExchangeUserToken returns the on-behalf-of application's token for the
// user of userToken ("" if none), cached or exchanged after local checks.
// carrier names, for the answers, what the token came in ("bearer token in
// Authorization", "assertion"). Failures carry their answer (AnswerFor)
// with the user's challenge.
func (a *App) ExchangeUserToken(ctx context.Context, applicationName, userToken, carrier string) (tokencache.Record, error) {
	e := a.exchangers[applicationName]
	if e == nil {
		return tokencache.Record{}, &answerError{Answer{Status: http.StatusNotFound, Code: CodeApplicationNotFound,
			Message: fmt.Sprintf("application %q is not an on-behalf-of application", applicationName)}}
	}
	if userToken == "" {
		return tokencache.Record{}, userTokenMissing("the request carries no " + carrier)
	}
	rules, err := userTokenRules(ctx, e, cmp.Or(time.Duration(a.WaitTimeout), tokencache.DefaultWaitTimeout), a.logger)
	if err != nil {
		return tokencache.Record{}, err
	}
	// An entry exists only for a token that passed the checks below.
	if len(userToken) <= entra.MaxUserTokenBytes {
		if rec, found, err := e.Lookup(userToken); found {
			return rec, nil
		} else if err != nil {
			return tokencache.Record{}, refusal(err, e, rules, userToken)
		}
	}
	user, err := entra.ReadUserAssertion(userToken, time.Now(), rules)
	if err != nil {
		var ute *entra.UserTokenError
		if errors.As(err, &ute) && ute.Claim == "" {
			return tokencache.Record{}, userTokenMissing("the " + carrier + " " + ute.Reason)
		}
		return tokencache.Record{}, &answerError{invalidUserToken(strings.TrimPrefix(err.Error(), "entra: "))}
	}
	rec, err := e.Exchange(ctx, userToken, user.TenantID, user.ExpiresAt, binding.ExchangeFunc(e.app.Client, user, e.app.Scopes))
	if err != nil {
		if answer, ok := userFailureAnswer(err, e.app, user.TenantID); ok {
			if c := a.logger.Check(zap.DebugLevel, "the user's token was refused by Entra"); c != nil {
				c.Write(zap.String("application", applicationName), zap.String("oid", user.ObjectID), zap.String("code", answer.Code))
			}
			return tokencache.Record{}, &answerError{answer}
		}
		return tokencache.Record{}, err
	}
	return rec, nil
}

// userTokenRules returns e's checks of a user's token, with the home
// tenant's ID resolved first when it is given by domain name: until then no
// user token is checked, and the request is answered 503 with Retry-After.
// A request waits for the resolution at most wait (wait_timeout); logger is
// told of its failures.
func userTokenRules(ctx context.Context, e *exchanger, wait time.Duration, logger *zap.Logger) (entra.UserTokenRules, error) {
	rules := e.app.OnBehalfOf.Rules
	if rules.TenantID != "" {
		return rules, nil
	}
	if id := e.homeTenant.Load(); id != nil {
		rules.TenantID = *id
		return rules, nil
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tenantID, retryAfter, err := binding.ResolveTenant(ctx, e.app.Client, logger)
	if err != nil {
		return rules, &answerError{Answer{Status: http.StatusServiceUnavailable, Code: CodeTokenRequestFailed,
			Message:    "the tenant's ID is not known yet, so users' tokens cannot be checked: " + strings.TrimPrefix(err.Error(), "entra: "),
			RetryAfter: max(retryAfter, time.Second)}}
	}
	e.homeTenant.Store(&tenantID)
	rules.TenantID = tenantID
	return rules, nil
}

// refusal answers a refusal remembered for userToken as it was answered.
func refusal(err error, e *exchanger, rules entra.UserTokenRules, userToken string) error {
	tenant := rules.TenantID
	if user, readErr := entra.ReadUserAssertion(userToken, time.Now(), rules); readErr == nil {
		tenant = user.TenantID
	}
	if answer, ok := userFailureAnswer(err, e.app, tenant); ok {
		return &answerError{answer}
	}
	return err
}

// DropExchanged forgets, in every replica, the token exchanged for
// userToken, which downstream refused (refused), and reports whether it
// did: at most once per user token every 10 s in this replica, and not
// when this replica already holds a newer one (tokencache.Exchanger.Drop).
func (a *App) DropExchanged(ctx context.Context, applicationName, userToken, refused string) bool {
	if e := a.exchangers[applicationName]; e != nil && userToken != "" {
		return e.Drop(ctx, userToken, refused)
	}
	return false
}
