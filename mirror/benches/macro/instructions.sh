#!/usr/bin/env bash
# Instructions per 64 KiB blob request under callgrind: a count that does not move with the
# machine's load, for A/B checks of per-request work that run.sh's timings are too noisy to
# see. On 127.0.0.1, bounded: each variant serves 300 warm-up requests, then its counters
# are zeroed and it serves 2,000 keep-alive requests from one client (`ab -k -c 1`), every
# answer a 2xx (a count of error answers would measure the error path).
#
#   mirror   registry-mirror, one worker, redirect cache off (every request asks the
#            registry, then storage: the path run.sh's "mirror" variant times);
#   cached   the same with the redirect cache on and warm (storage only);
#   bare     mirror/benches/macro/bare_follower.rs (follows every 307, nothing else);
#   alt      (with ALT_BIN) another build of the mirror, as "mirror" (or with ALT_FLAGS
#            instead of `--redirect-cache 0`: ALT_FLAGS= for the warm cache): an A/B. A
#            build with a blob store wants `--blob-store none` in its ALT_FLAGS; one from
#            before the store (eb40a40, say) knows no such flag.
#
# Origin as in run.sh: the registry stand-in and nginx as storage, on ports 7000 and 7001.
#
# usage: bash mirror/benches/macro/instructions.sh
#        (as root on Debian/Ubuntu, it installs nginx, valgrind, ab and curl if missing; uses
#        ports 7000, 7001 and 7010; about a minute once built)
#        ALT_BIN=/path/to/other/registry-mirror bash mirror/benches/macro/instructions.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)  # the workspace
WORK=$(mktemp -d /tmp/tsr-instructions.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -f $WORK/storage.pid ]]; then kill "$(cat "$WORK/storage.pid")" 2>/dev/null || true; fi
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT
if ! command -v nginx >/dev/null || ! command -v valgrind >/dev/null || ! command -v ab >/dev/null \
  || ! command -v curl >/dev/null; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx valgrind apache2-utils curl >/dev/null
fi
(cd "$ROOT" && cargo build --release --quiet -p registry-mirror --bin registry-mirror \
  --example bench_registry_stand_in --example bench_bare_follower)
BIN="$ROOT/target/release"

SMALL=$(printf 'c%.0s' {1..64})
mkdir -p "$WORK/blobs" "$WORK/tmp"
chmod 755 "$WORK" "$WORK/blobs"  # nginx workers run unprivileged
head -c 65536 /dev/urandom > "$WORK/blobs/$SMALL"
cat > "$WORK/storage.conf" <<NGINX
worker_processes 1;
pid $WORK/storage.pid;
error_log $WORK/storage-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/tmp;
  server {
    listen 127.0.0.1:7001;
    location /blobs/ {
      if (\$http_authorization) { return 400; }
      alias $WORK/blobs/;
    }
  }
}
NGINX
nginx -c "$WORK/storage.conf" -p "$WORK"
"$BIN/examples/bench_registry_stand_in" 127.0.0.1:7000 http://127.0.0.1:7001 & PIDS+=($!)

TOKEN="Authorization: Bearer benchtoken"
URL="http://127.0.0.1:7010/v2/bench/blobs/sha256:$SMALL"
MIRROR_FLAGS=(--listen 127.0.0.1:7010 --upstream bench=http://127.0.0.1:7000
  --storage-host 127.0.0.1:7001 --log warn --workers 1)
declare -A COUNT
measure() { # variant command...: COUNT[variant] = instructions per request of the server
  local variant=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$@" >"$WORK/valgrind.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  local ready=''
  for _ in $(seq 1 120); do
    if [[ $(curl -s -o /dev/null -w '%{http_code}' -H "$TOKEN" "$URL" || true) == 200 ]]; then ready=1; break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/valgrind.log" >&2; exit 1; }
    sleep 0.5
  done
  [[ -n $ready ]] || { echo "$variant did not answer 200 within 60 s" >&2; exit 1; }
  ab -q -k -n 300 -c 1 -H "$TOKEN" "$URL" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1 || { echo "$variant: callgrind_control -z failed" >&2; exit 1; }
  local out; out=$(ab -q -k -n 2000 -c 1 -H "$TOKEN" "$URL")
  if ! grep -q '^Complete requests: *2000$' <<<"$out" || ! grep -q '^Failed requests: *0$' <<<"$out" \
    || grep -q 'Non-2xx' <<<"$out"; then
    echo "$variant: ab did not get 2,000 answers of 2xx: $out" >&2; exit 1
  fi
  callgrind_control -d "$pid" >/dev/null 2>&1 || { echo "$variant: callgrind_control -d failed" >&2; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local dump total
  dump=$(find "$WORK" -name 'cg.out.*' | sort | tail -1)
  [[ -n $dump ]] || { echo "$variant: no callgrind dump" >&2; exit 1; }
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  [[ $total =~ ^[0-9]+$ ]] || { echo "$variant: no total in $dump" >&2; exit 1; }
  [[ -n ${KEEP_DUMPS:-} ]] && cp "$dump" "$KEEP_DUMPS.$variant"
  rm -f "$WORK"/cg.out*
  COUNT[$variant]=$((total / 2000))
}

# This build without its blob store (which would answer the blob from memory after the
# warm-up, and write to the default data directory): the path through registry and storage.
measure mirror "$BIN/registry-mirror" "${MIRROR_FLAGS[@]}" --blob-store none --redirect-cache 0
measure cached "$BIN/registry-mirror" "${MIRROR_FLAGS[@]}" --blob-store none
measure bare "$BIN/examples/bench_bare_follower" 127.0.0.1:7010 http://127.0.0.1:7000
if [[ -n ${ALT_BIN:-} ]]; then
  read -r -a ALT_EXTRA <<<"${ALT_FLAGS---redirect-cache 0}"
  measure alt "$ALT_BIN" "${MIRROR_FLAGS[@]}" "${ALT_EXTRA[@]}"
fi

echo "instructions per 64 KiB request (callgrind, 2,000 keep-alive requests after 300)"
for v in mirror cached bare alt; do
  [[ -n ${COUNT[$v]:-} ]] && printf '%-7s %8d\n' "$v" "${COUNT[$v]}"
done
awk -v m="${COUNT[mirror]}" -v b="${COUNT[bare]}" 'BEGIN {printf "mirror/bare %.2f\n", m / b}'
if [[ -n ${COUNT[alt]:-} && -z ${ALT_FLAGS+set} ]]; then
  awk -v m="${COUNT[mirror]}" -v a="${COUNT[alt]}" 'BEGIN {printf "alt/mirror %.3f\n", a / m}'
elif [[ -n ${COUNT[alt]:-} ]]; then
  echo "(alt ran with ALT_FLAGS=\"$ALT_FLAGS\" instead of --redirect-cache 0)"
fi
