# Builds Caddy with the Entra token injector using xcaddy, the way any Caddy
# plugin is built, from this checkout:
#
#   docker build -f xcaddy.Dockerfile -t caddy-entra .
#   docker run --rm --network container:<the application's container> \
#     -e ENTRA_TENANT_ID -e ENTRA_CLIENT_ID -e ENTRA_CLIENT_SECRET \
#     -v "$PWD/Caddyfile.example:/etc/caddy/Caddyfile:ro" caddy-entra
#
# As in a pod, the sidecar shares the application's network namespace: the
# application reaches it on 127.0.0.1:8080 (Caddyfile.example binds loopback
# only). Caddy's admin API is on a Unix socket in this container's own
# /run/caddy-entra (mode 0700 below), which the application cannot open:
#   docker exec <sidecar> caddy reload --config /etc/caddy/Caddyfile \
#     --address unix//run/caddy-entra/admin.sock
#
# The xcaddy command below is the one CI-free users can run locally too:
#   go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build v2.11.9 \
#     --with github.com/caddy-entra/caddy-entra/caddymodule \
#     --with github.com/caddy-entra/caddy-entra/handoff/caddyhandoff \
#     --replace github.com/caddy-entra/caddy-entra=.

FROM golang:1.26-bookworm AS builder
RUN go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 xcaddy build v2.11.9 \
	--output /usr/bin/caddy \
	--with github.com/caddy-entra/caddy-entra/caddymodule \
	--with github.com/caddy-entra/caddy-entra/handoff/caddyhandoff \
	--replace github.com/caddy-entra/caddy-entra=/src
RUN /usr/bin/caddy list-modules | grep -cxE 'entra|http.handlers.entra_token|handoff' | grep -qx 3

FROM caddy:2.11.9
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
# The directory of the admin API's socket (Caddyfile.example's default):
# Caddy does not make it, and only the sidecar's user (root here) may enter.
RUN mkdir -p /run/caddy-entra && chmod 0700 /run/caddy-entra
