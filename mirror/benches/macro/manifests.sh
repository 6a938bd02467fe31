#!/usr/bin/env bash
# What a pull costs against a Docker-Hub-like pull limit, and how fast warm manifests are
# served, on 127.0.0.1, bounded in count and time:
#
#   (a) 100 pulls of one tag (a manifest GET by tag, as skopeo and containerd do; Docker asks
#       with a HEAD by tag, then a GET by digest) by 10 concurrent clients through the mirror,
#       then the registry stand-in's counts: manifest GETs (what Docker Hub's limit counts)
#       and HEADs (free);
#   (b) wrk -t2 -c64 for 5 s on a warm manifest, by digest and by tag, through the mirror and
#       through the nginx recipe (which proxies every manifest request to the registry).
#
# The registry is mirror/benches/macro/registry_stand_in.rs (an OCI index of ~1.5 KiB for any
# tag or digest, counting); the nginx recipe is run.sh's. Medians of ROUNDS (default 3)
# wrk runs, interleaved.
#
# usage: bash mirror/benches/macro/manifests.sh [ROUNDS]   (installs nginx, wrk, curl if missing)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)  # the workspace
ROUNDS=${1:-3}
WORK=$(mktemp -d /tmp/tsr-manifests.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -f $WORK/peer.pid ]] && kill "$(cat "$WORK/peer.pid")" 2>/dev/null || true
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v curl >/dev/null; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk curl >/dev/null
fi
(cd "$ROOT" && cargo build --release --quiet -p registry-mirror --bin registry-mirror --example bench_registry_stand_in)
mkdir -p "$WORK/tmp"
cat > "$WORK/peer.conf" <<NGINX
worker_processes 2;
pid $WORK/peer.pid;
error_log $WORK/peer-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/tmp;
  proxy_temp_path $WORK/tmp;
  upstream registry { server 127.0.0.1:7100; keepalive 64; }
  server {
    listen 127.0.0.1:7102 backlog=4096;
    location /v2/ {
      proxy_pass http://registry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
"$ROOT/target/release/examples/bench_registry_stand_in" 127.0.0.1:7100 http://127.0.0.1:7101 & PIDS+=($!)
"$ROOT/target/release/registry-mirror" --listen 127.0.0.1:7103 --upstream bench=http://127.0.0.1:7100 --log warn & PIDS+=($!)
nginx -c "$WORK/peer.conf" -p "$WORK"
sleep 1
AUTH="Authorization: Bearer benchtoken"
counts() { curl -s http://127.0.0.1:7100/counts | awk -v k="$1" '$1 == k { print $2 }'; }

# (a) 100 pulls by 10 clients.
g0=$(counts manifest_gets); h0=$(counts manifest_heads)
seq 1 100 | xargs -P 10 -I{} curl -s -o /dev/null -w '%{http_code}\n' -H "$AUTH" \
  -H 'Accept: application/vnd.oci.image.index.v1+json' http://127.0.0.1:7103/v2/bench/app/manifests/v1 \
  | sort | uniq -c | sed 's/^/  status: /'
gets=$(( $(counts manifest_gets) - g0 )); heads=$(( $(counts manifest_heads) - h0 ))
echo "100 pulls of one tag by 10 clients through the mirror: $gets manifest GET(s) and $heads HEAD(s) upstream"
DIGEST=$(curl -s -D - -o /dev/null -H "$AUTH" http://127.0.0.1:7100/v2/bench/app/manifests/v1 | tr -d '\r' \
  | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }')

# (b) warm manifests, req/s and p99, medians of ROUNDS interleaved runs.
wrk_run() { # url -> "req/s p99_ms"
  wrk -t2 -c64 -d5s --latency -H "$AUTH" -H 'Accept: application/vnd.oci.image.index.v1+json' "$1" \
    | awk '/Requests\/sec/ { rps = $2 } / 99%/ { p = $2; if (p ~ /us$/) { sub(/us/, "", p); p /= 1000 } else if (p ~ /ms$/) { sub(/ms/, "", p) } else if (p ~ /s$/) { sub(/s/, "", p); p *= 1000 } } END { printf "%.0f %.2f\n", rps, p }'
}
declare -A RPS P99
for round in $(seq 1 "$ROUNDS"); do
  for variant in mirror-digest nginx-digest mirror-tag nginx-tag; do
    case $variant in
      mirror-digest) url="http://127.0.0.1:7103/v2/bench/app/manifests/$DIGEST" ;;
      nginx-digest) url="http://127.0.0.1:7102/v2/bench/app/manifests/$DIGEST" ;;
      mirror-tag) url="http://127.0.0.1:7103/v2/bench/app/manifests/v1" ;;
      nginx-tag) url="http://127.0.0.1:7102/v2/bench/app/manifests/v1" ;;
    esac
    read -r rps p99 < <(wrk_run "$url")
    RPS[$variant]+="$rps "; P99[$variant]+="$p99 "
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo
echo "| warm manifest, wrk -t2 -c64 5 s, median of $ROUNDS | nginx recipe req/s | mirror req/s | ratio | nginx p99 ms | mirror p99 ms |"
echo "|---|---:|---:|---:|---:|---:|"
for kind in digest tag; do
  n=$(median <<<"${RPS[nginx-$kind]}"); m=$(median <<<"${RPS[mirror-$kind]}")
  np=$(median <<<"${P99[nginx-$kind]}"); mp=$(median <<<"${P99[mirror-$kind]}")
  echo "| by $kind | $n | $m | $(awk -v m="$m" -v n="$n" 'BEGIN { printf "%.2f", m / n }') | $np | $mp |"
done
gets_total=$(counts manifest_gets); heads_total=$(counts manifest_heads)
echo
echo "upstream over the whole run: $gets_total manifest GET(s) (the nginx recipe's and the mirror's), $heads_total HEAD(s)"
