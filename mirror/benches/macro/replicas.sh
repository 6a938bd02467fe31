#!/usr/bin/env bash
# Three replicas sharing state against three alone, in one run, on 127.0.0.1, bounded in count
# and time: what 100 pulls cost upstream, and what the shared state adds to each request.
#
#   shared  three mirrors on one S3 store (s3s-fs, every request SigV4-checked) and one Redis
#           (Debian's redis-server): --blob-store s3://... --shared-state redis://...
#   s3      the same S3 store, no Redis: what the shared state itself adds is shared - s3
#   alone   three mirrors as before this (each its own local store, no shared state)
#
# A pull is what skopeo and containerd send: a manifest GET by tag, then a GET of each of its
# two layers (8 MiB each, anonymous, from the registry stand-in's public mode, whose layers
# redirect to nginx as storage). 100 pulls by 10 concurrent clients, pull i through replica
# i mod 3, the caches cold at the start: then the stand-in's counts (manifest GETs: what
# Docker Hub's pull limit counts; blob GETs) and storage's (downloads), and each request's
# time (curl's time_total) as p50/p99 by kind; then 100 pulls more, warm.
#
# usage: bash mirror/benches/macro/replicas.sh   (installs nginx, redis-server, curl, s3s-fs)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)  # the workspace
WORK=$(mktemp -d /tmp/tsr-replicas.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -f $WORK/storage.pid ]] && kill "$(cat "$WORK/storage.pid")" 2>/dev/null || true
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT
need=()
for tool in nginx redis-server curl python3; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  made_policy=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  [[ -n $made_policy ]] && rm -f /usr/sbin/policy-rc.d
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v s3s-fs >/dev/null || cargo install s3s-fs --version 0.14.1 --features binary --locked --quiet
(cd "$ROOT" && cargo build --release --quiet -p registry-mirror --bin registry-mirror --example bench_registry_stand_in)
BIN=$ROOT/target/release

# Two layers, named by their digests, as storage serves them.
mkdir -p "$WORK/blobs" "$WORK/tmp" "$WORK/s3/bench"
chmod 755 "$WORK" "$WORK/blobs"  # nginx's workers read the layers
LAYERS=()
for n in 1 2; do
  head -c $((8 * 1024 * 1024)) /dev/urandom > "$WORK/layer"
  hex=$(sha256sum "$WORK/layer" | cut -d' ' -f1)
  mv "$WORK/layer" "$WORK/blobs/$hex" && chmod 644 "$WORK/blobs/$hex"
  LAYERS+=("sha256:$hex")
done
cat > "$WORK/storage.conf" <<NGINX
worker_processes 2;
pid $WORK/storage.pid;
error_log $WORK/storage-error.log;
events { worker_connections 1024; }
http {
  log_format path '\$request_method \$uri';
  access_log $WORK/storage-access.log path;
  sendfile on;
  client_body_temp_path $WORK/tmp;
  server {
    listen 127.0.0.1:7301;
    location /blobs/ { alias $WORK/blobs/; }
  }
}
NGINX
nginx -c "$WORK/storage.conf" -p "$WORK"
"$BIN/examples/bench_registry_stand_in" 127.0.0.1:7300 http://127.0.0.1:7301 public & PIDS+=($!)
S3_KEYS=(AKIDREPLICAS replicas-secret-key-0123456789)
s3s-fs --host 127.0.0.1 --port 7302 --access-key "${S3_KEYS[0]}" --secret-key "${S3_KEYS[1]}" "$WORK/s3" \
  >"$WORK/s3s-fs.log" 2>&1 & PIDS+=($!)
REDIS_PASSWORD=replicas-bench-password
printf 'bind 127.0.0.1\nport 7303\nsave ""\nappendonly no\nrequirepass "%s"\ndir "%s"\ndaemonize no\n' \
  "$REDIS_PASSWORD" "$WORK" | redis-server - >"$WORK/redis.log" 2>&1 & PIDS+=($!)

COMMON=(--upstream bench=http://127.0.0.1:7300 --storage-host 127.0.0.1:7301 --log warn)
S3=(--s3-endpoint http://127.0.0.1:7302 --s3-access-key-id "${S3_KEYS[0]}" --s3-secret-access-key "${S3_KEYS[1]}")
SHARED=(--blob-store s3://bench/fleet "${S3[@]}" --shared-state redis://127.0.0.1:7303/0)
S3_ONLY=(--blob-store s3://bench/solo "${S3[@]}")
start_replica() { # port, flags...
  local port=$1; shift
  mkdir -p "$WORK/data-$port"
  MIRROR_SHARED_STATE_PASSWORD=$REDIS_PASSWORD MIRROR_SHARED_STATE_KEY=replicas-bench-own-key-5f2c \
    "$BIN/registry-mirror" --listen "127.0.0.1:$port" \
    --data-dir "$WORK/data-$port" "${COMMON[@]}" "$@" >"$WORK/mirror-$port.log" 2>&1 & PIDS+=($!)
}
wait_up() {
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/healthz" && return 0; sleep 0.1; done
  echo "nothing answers on :$1"; cat "$WORK/mirror-$1.log" 2>/dev/null; exit 1
}
sleep 0.5
for port in 7311 7312 7313; do start_replica "$port" "${SHARED[@]}"; done
for port in 7321 7322 7323; do start_replica "$port"; done
for port in 7331 7332 7333; do start_replica "$port" "${S3_ONLY[@]}"; done
for port in 7311 7312 7313 7321 7322 7323 7331 7332 7333; do wait_up "$port"; done

counts() { curl -s http://127.0.0.1:7300/counts | awk -v k="$1" '$1 == k { print $2 }'; }
downloads() { grep -c '^GET /blobs/' "$WORK/storage-access.log" || true; }
# One pull through the replica on port $1: "kind status seconds" per request.
pull() {
  local base=http://127.0.0.1:$1/v2/bench/app
  curl -s -o /dev/null --max-time 60 -w "manifest %{http_code} %{time_total}\n" "$base/manifests/v1"
  for layer in "${LAYERS[@]}"; do
    curl -s -o /dev/null --max-time 60 -w "blob %{http_code} %{time_total}\n" "$base/blobs/$layer"
  done
}
export -f pull
export LAYERS_LIST="${LAYERS[*]}"
# 100 pulls by 10 clients over the three replicas of $1 (7311 or 7321): the lines of every request.
wave() {
  local first=$1
  seq 0 99 | xargs -P 10 -I{} bash -c 'LAYERS=($LAYERS_LIST); pull $(( '"$first"' + {} % 3 ))'
}
# p50 and p99 (ms) of the requests of kind $1 in file $2; every status counted.
stats() {
  python3 - "$1" "$2" <<'PY'
import sys
kind, path = sys.argv[1], sys.argv[2]
rows = [l.split() for l in open(path) if l.startswith(kind + " ")]
ms = sorted(float(r[2]) * 1000 for r in rows)
bad = sum(1 for r in rows if r[1] != "200")
q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]
print(f"{len(ms)} {bad} {q(0.5):.1f} {q(0.99):.1f}")
PY
}

declare -A GETS BLOBGETS DOWNLOADS
declare -A FIRST=([shared]=7311 [alone]=7321 [s3]=7331)
for setting in shared s3 alone; do
  first=${FIRST[$setting]}
  g0=$(counts manifest_gets); b0=$(counts blob_gets); d0=$(downloads)
  wave "$first" > "$WORK/$setting-cold.txt"
  GETS[$setting]=$(( $(counts manifest_gets) - g0 ))
  BLOBGETS[$setting]=$(( $(counts blob_gets) - b0 ))
  DOWNLOADS[$setting]=$(( $(downloads) - d0 ))
  wave "$first" > "$WORK/$setting-warm.txt"
done

echo "100 pulls (a manifest GET by tag, then 2 layers of 8 MiB) by 10 clients over 3 replicas, cold:"
printf '| %-32s | %7s | %7s | %7s |\n' "upstream, per 100 pulls" shared s3 alone
printf '|%s|%s|%s|%s|\n' "----------------------------------" "--------:" "--------:" "--------:"
printf '| %-32s | %7s | %7s | %7s |\n' "manifest GETs (the pull limit)" "${GETS[shared]}" "${GETS[s3]}" "${GETS[alone]}"
printf '| %-32s | %7s | %7s | %7s |\n' "registry blob GETs" "${BLOBGETS[shared]}" "${BLOBGETS[s3]}" "${BLOBGETS[alone]}"
printf '| %-32s | %7s | %7s | %7s |\n' "downloads from storage" "${DOWNLOADS[shared]}" "${DOWNLOADS[s3]}" "${DOWNLOADS[alone]}"
echo
echo "each request's time (curl time_total), ms, p50 / p99:"
printf '| %-20s | %15s | %15s | %15s | %s |\n' request shared s3 alone "non-200"
printf '|%s|%s|%s|%s|%s|\n' "----------------------" "----------------:" "----------------:" "----------------:" "---"
for phase in cold warm; do
  for kind in manifest blob; do
    row=() bad=()
    for setting in shared s3 alone; do
      read -r n b p50 p99 <<<"$(stats "$kind" "$WORK/$setting-$phase.txt")"
      row+=("$p50 / $p99"); bad+=("$b")
    done
    printf '| %-20s | %15s | %15s | %15s | %s |\n' "$kind, $phase ($n)" "${row[@]}" "${bad[*]}"
  done
done
redis_calls=$(curl -s http://127.0.0.1:7311/metrics | awk '/^registry_mirror_shared_state_errors_total / { print $2 }')
echo
echo "shared-state errors on replica 1: ${redis_calls:-0}"
# The Redis round trips themselves, from the three shared replicas' histograms
# (registry_mirror_shared_state_seconds): how many, per request, and their p50 / p99 (the
# upper bound of the bucket each falls in).
for port in 7311 7312 7313; do curl -s "http://127.0.0.1:$port/metrics"; done | python3 -c '
import sys, collections
buckets, count = collections.Counter(), 0
for line in sys.stdin:
    if line.startswith("registry_mirror_shared_state_seconds_bucket"):
        le = line.split("le=\"")[1].split("\"")[0]
        buckets[float(le)] += float(line.split()[-1])
    elif line.startswith("registry_mirror_shared_state_seconds_count"):
        count += float(line.split()[-1])
def q(p):
    for le in sorted(buckets):
        if buckets[le] >= p * count:
            return f"{le * 1000:.1f}" if le != float("inf") else "inf"
requests = 2 * 100 * 3
print(f"Redis round trips over 200 pulls ({requests} requests): {count:.0f} calls, "
      f"{count / requests:.2f} per request, p50 <= {q(0.5)} ms, p99 <= {q(0.99)} ms")
'
