package caddymodule

import (
	"errors"
	"fmt"
	"slices"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// resolvedApplication is one configured application with its placeholders
// resolved, its identity inherited and checked, and its token client made.
type resolvedApplication struct {
	Name   string
	Scopes []string
	Client *entra.Client
}

// resolveApplications resolves and checks every application, sorted by
// name; errors carry the seed's code and name the field.
func (a *App) resolveApplications(repl *caddy.Replacer) ([]resolvedApplication, error) {
	if len(a.Applications) == 0 {
		return nil, configError("application", "at least one application is required")
	}
	names := make([]string, 0, len(a.Applications))
	for name := range a.Applications {
		names = append(names, name)
	}
	slices.Sort(names)
	apps := make([]resolvedApplication, 0, len(names))
	for _, name := range names {
		app := a.Applications[name]
		scopes, err := validateApplication(name, app)
		if err != nil {
			return nil, err
		}
		identity := a.IdentityConfig
		field := ""
		if !app.IdentityConfig.isZero() {
			field = "application " + name + ": "
			if identity, err = app.IdentityConfig.inherit(a.IdentityConfig, field); err != nil {
				return nil, err
			}
		}
		cfg, err := identity.clientConfig(repl, field)
		if err != nil {
			return nil, err
		}
		if cfg.ManagedIdentity != nil && len(scopes) != 1 {
			return nil, configError("application "+name+": scope", "a managed identity gets a token for exactly one resource; "+
				"configure one scope per application")
		}
		client, err := entra.NewClient(cfg)
		if err != nil {
			var ce *entra.ConfigError
			if errors.As(err, &ce) {
				return nil, configError(field+ce.Field, ce.Reason)
			}
			return nil, fmt.Errorf("%s: %s%v", tokencache.CodeProviderInvalidConfig, field, err)
		}
		apps = append(apps, resolvedApplication{Name: name, Scopes: scopes, Client: client})
	}
	return apps, nil
}
