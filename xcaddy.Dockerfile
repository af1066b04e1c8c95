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
# only, through the handoff module: no other socket can share the port).
# Caddy's admin API is on a Unix socket in this container's own
# /run/caddy-entra (mode 0700 below), which the application cannot open:
#   docker exec <sidecar> caddy reload --config /etc/caddy/Caddyfile \
#     --address unix//run/caddy-entra/admin.sock
#
# The xcaddy command below is the one CI-free users can run locally too:
#   go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build v2.11.9 \
#     --with github.com/caddy-entra/caddy-entra=.

FROM golang:1.26-bookworm AS builder
RUN go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 xcaddy build v2.11.9 \
	--output /usr/bin/caddy \
	--with github.com/caddy-entra/caddy-entra=/src
RUN /usr/bin/caddy list-modules | grep -cxE 'entra|http.handlers.entra_token|handoff' | grep -qx 3

FROM caddy:2.11.9
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
# The sidecar runs as a user and group of its own (10002, as in
# deploy/kubernetes/deployment.yaml), never as root and never as the
# application's user: a process of its user could read its memory and bind
# its port beside it. The directory of the admin API's socket
# (Caddyfile.example's default), which Caddy does not make, is its alone,
# and so are Caddy's data and config directories (those of the
# Deployment, outside the base image's root-owned /data and /config).
ENV XDG_CONFIG_HOME=/var/lib/caddy/config XDG_DATA_HOME=/var/lib/caddy/data
RUN mkdir -p /run/caddy-entra /var/lib/caddy/config /var/lib/caddy/data \
	&& chown -R 10002:10002 /run/caddy-entra /var/lib/caddy \
	&& chmod 0700 /run/caddy-entra /var/lib/caddy
USER 10002:10002
