#!/usr/bin/env bash
# Measures what entra_token adds to a request on loopback: the same Caddy
# proxies to the same upstream with and without token injection, under wrk.
# Needs wrk (apt-get install wrk). Usage: bash bench/load.sh [duration]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/emulator" ./cmd/entra-emulator
"$work/emulator" -listen 127.0.0.1:19400 > "$work/emulator.log" 2>&1 &

cat > "$work/Caddyfile" <<'CADDY'
{
	admin off
	handoff
	entra {
		authority_host http://127.0.0.1:19400
		tenant_id      00000000-0000-4000-8000-000000000001
		client_id      00000000-0000-4000-8000-0000000000c1
		client_secret  emulator-secret
		application bench api://bench/.default
	}
}
:19401 {
	bind handoff/127.0.0.1
	respond "ok"
}
:19402 {
	bind handoff/127.0.0.1
	reverse_proxy 127.0.0.1:19401
}
:19403 {
	bind handoff/127.0.0.1
	entra_token bench
	reverse_proxy 127.0.0.1:19401
}
CADDY
HOME="$work" XDG_DATA_HOME="$work" XDG_CONFIG_HOME="$work" \
	"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile > "$work/caddy.log" 2>&1 &
for _ in $(seq 100); do
	curl -fs http://127.0.0.1:19403/ >/dev/null 2>&1 && break
	sleep 0.1
done
curl -fs http://127.0.0.1:19403/ >/dev/null # warm: the token is cached from here on

for port in 19402 19403; do
	label="reverse_proxy only"
	[ "$port" = 19403 ] && label="entra_token + reverse_proxy"
	echo "== $label"
	wrk -t2 -c32 -d"$duration" --latency "http://127.0.0.1:$port/" | grep -E "Requests/sec|^ +50%|^ +99%"
done
