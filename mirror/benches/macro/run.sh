#!/usr/bin/env bash
# Macro benchmark on 127.0.0.1, bounded in count and time. Variants, interleaved in every
# round so that they share the machine's state:
#
#   direct   curl from the storage stand-in itself: the ceiling.
#   nginx    the well-known nginx recipe (proxy_intercept_errors + error_page 307 =
#            @handle_redirect, then proxy_pass $upstream_http_location with Authorization
#            cleared), keep-alive to the registry, tuned as an operator would for blobs:
#            proxy_buffers 16 256k, proxy_buffer_size 16k, proxy_busy_buffers_size 512k,
#            no temp files. NGINX_TUNING="..." replaces those directives (also tried:
#            `proxy_buffering off` with one 256k buffer, in one 7-round comparison: 0.89x the MB/s on 1 GiB, 1.24x the
#            CPU per GiB; the default 32 x 64k: the README's earlier runs).
#   bare     mirror/benches/macro/bare_follower.rs: hyper server + hyper-util client following the
#            307 with a clean GET and nothing else, on the mirror's runtime and hyper settings.
#   mirror   registry-mirror, release build, `--log warn`.
#   cached   the same with the redirect cache warm (repeated pulls of the same blobs).
#   verify   the mirror with --verify-digests (every blob hashed while it streams).
#   alt      (only when listed in VARIANTS) another build of the mirror, ALT_BIN, run as
#            `mirror` is plus ALT_FLAGS: an A/B of a change in the same interleaved rounds.
#   altstore (only when listed) ALT_BIN run as `store` is: an A/B of the store's read path.
#   store    the mirror with its blob store, warm: every blob is served from its local store
#            (`store hit`).
#   ncache   nginx's proxy_cache mirror recipe, the peer that stores blobs: the recipe above
#            with `proxy_cache` keyed by the blob's path in both locations, warm (a hit is a
#            sendfile from the cache file, nothing asked upstream).
#   fill     the mirror with its blob store, cold: the store is emptied (the mirror started
#            again) before each measure, so every blob is downloaded into it while it is
#            served; against `mirror` (today's, no store) it is the cost of filling.
#
# The mirror variants other than store and fill run with `--blob-store none`: they stream
# every blob from storage, as the mirror did before it had a store.
#
# Origin: a registry stand-in (mirror/benches/macro/registry_stand_in.rs) answering blob GETs that
# carry the Bearer token with an empty 307 to a pre-signed-looking URL; nginx as storage
# (sendfile, Range, 400 on any Authorization, 403 on anything but GET). `tcp_nopush` is off:
# with it, nginx's TCP_CORK stalls keep-alive clients ~40 ms on loopback.
#
# STORAGE=https serves storage over TLS instead (nginx `ssl` on :7011 with a certificate of a
# CA the script makes; the registry's Locations are https): the mirror trusts the CA with
# --upstream-ca, nginx's recipes verify with it (proxy_ssl_verify on, the session reused, as
# an operator sets them), and direct is curl over https (the ceiling). The URLs name
# 127.0.0.1 (nginx's variable proxy_pass resolves no name without a DNS resolver), so the
# certificate holds that address and a name nginx checks it by (proxy_ssl_name).
#
# Measures: (a) one 1 GiB blob, MB/s and the proxy's CPU seconds per GiB; (b) a 64 KiB blob
# with wrk -t2 -c64 for 5 s: requests/s, p50, p99, proxy CPU per request; (c) 16 parallel
# 64 MiB downloads: wall time and each proxy's peak RSS during them; (d) for mirror and fill,
# 64 KiB blobs that are all different (a pool of 20,000, with wrk cycling through them): the
# cold path per request; and each proxy's peak RSS over the whole run. Prints the table (medians of the rounds; the largest peak), the ratios
# (of the medians, and round by round: see report.py), and which goals hold.
#
# usage: bash mirror/benches/macro/run.sh [ROUNDS]   (default 3; installs nginx, wrk and curl if missing)
#        VARIANTS="direct nginx bare mirror" bash mirror/benches/macro/run.sh 1   (a subset)
#        COLD_FLAGS="..." sets the plain mirror's extra flags (default: --redirect-cache 0)
#        NGINX_TUNING="..." sets the nginx variant's buffer directives (see above)
#        RAW=file keeps every round's numbers (the table shows medians)
#        STORAGE=https VARIANTS="direct nginx mirror cached" bash mirror/benches/macro/run.sh 3
#        VARIANTS="nginx mirror alt" ALT_BIN=/tmp/registry-mirror.b bash mirror/benches/macro/run.sh 5
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)  # the workspace
ROUNDS=${1:-3}
WORK=$(mktemp -d /tmp/tsr-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for f in storage peer cache; do [[ -f $WORK/$f.pid ]] && kill "$(cat "$WORK/$f.pid")" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v curl >/dev/null; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk curl >/dev/null
fi
(cd "$ROOT" && cargo build --release --quiet -p registry-mirror --bin registry-mirror \
  --example bench_registry_stand_in --example bench_bare_follower)
BIN="$ROOT/target/release/examples"
STORAGE=${STORAGE:-http}
[[ $STORAGE == http || $STORAGE == https ]] || { echo "STORAGE is http or https" >&2; exit 2; }

TOKEN="Authorization: Bearer benchtoken"
GIB=$(printf 'a%.0s' {1..64}); MID=$(printf 'b%.0s' {1..64}); SMALL=$(printf 'c%.0s' {1..64})
mkdir -p "$WORK/blobs" "$WORK/tmp"
chmod 755 "$WORK" "$WORK/blobs"  # nginx workers run unprivileged
# Storage over TLS: a CA, and storage's certificate for 127.0.0.1 (and storage.bench).
STORAGE_URL=http://127.0.0.1:7001 STORAGE_HOST=127.0.0.1:7001
MIRROR_TLS=() PEER_TLS='' CURL_TLS=()
if [[ $STORAGE == https ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=storage.bench \
    -keyout "$WORK/storage.key" -out "$WORK/storage.csr" 2>/dev/null
  printf 'subjectAltName=DNS:storage.bench,IP:127.0.0.1\n' > "$WORK/san.ext"
  openssl x509 -req -in "$WORK/storage.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/san.ext" -out "$WORK/storage.pem" 2>/dev/null
  chmod 644 "$WORK"/*.pem "$WORK"/*.key
  STORAGE_URL=https://127.0.0.1:7011 STORAGE_HOST=127.0.0.1:7011
  MIRROR_TLS=(--upstream-ca "$WORK/ca.pem")
  PEER_TLS="proxy_ssl_verify on; proxy_ssl_trusted_certificate $WORK/ca.pem; proxy_ssl_name storage.bench; proxy_ssl_server_name on; proxy_ssl_session_reuse on;"
  CURL_TLS=(--cacert "$WORK/ca.pem")
fi
head -c 1073741824 /dev/urandom > "$WORK/blobs/$GIB"
head -c 67108864 /dev/urandom > "$WORK/blobs/$MID"
head -c 65536 /dev/urandom > "$WORK/blobs/$SMALL"
# The store variants check digests: the blobs under their sha256 too (the stand-in maps a
# digest to the file of that name). And phase (d)'s pool of 20,000 different 64 KiB blobs.
for f in "$GIB" "$MID" "$SMALL"; do
  d=$(sha256sum "$WORK/blobs/$f" | cut -d' ' -f1)
  ln -s "$WORK/blobs/$f" "$WORK/blobs/$d"
  eval "REAL_$f=$d"
done
python3 - "$WORK/blobs" "$WORK/pool" <<'PY'
import hashlib, os, sys
blobs, pool = sys.argv[1], sys.argv[2]
with open(pool, "w") as out:
    for i in range(20000):
        data = os.urandom(65536)
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        out.write(digest + "\n")
PY
cat > "$WORK/pool.lua" <<LUA
-- Each thread walks the pool from its own offset: every request a different blob.
local digests, n = {}, 0
local threads = 0
function setup(thread) threads = threads + 1; thread:set("offset", threads * 10000) end
function init(args)
  for line in io.lines("$WORK/pool") do digests[#digests + 1] = line end
  n = offset
end
function request()
  n = n + 1
  return wrk.format("GET", "/v2/bench/blobs/sha256:" .. digests[(n % #digests) + 1],
    { Authorization = "Bearer benchtoken" })
end
LUA
cat > "$WORK/storage.conf" <<NGINX
worker_processes 2;
pid $WORK/storage.pid;
error_log $WORK/storage-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush off;
  tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/tmp;
  ssl_session_cache shared:storage:10m;
  server {
    listen 127.0.0.1:7001 backlog=4096;
    $([[ $STORAGE == https ]] && echo "listen 127.0.0.1:7011 ssl backlog=4096; ssl_certificate $WORK/storage.pem; ssl_certificate_key $WORK/storage.key;")
    location /blobs/ {
      if (\$http_authorization) { return 400; }
      if (\$request_method != GET) { return 403; }
      alias $WORK/blobs/;
    }
  }
}
NGINX
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
  upstream registry { server 127.0.0.1:7000; keepalive 64; }
  server {
    listen 127.0.0.1:7002 backlog=4096;
    location /v2/ {
      proxy_pass http://registry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_intercept_errors on;
      error_page 301 302 303 307 308 = @handle_redirect;
    }
    location @handle_redirect {
      set \$saved_redirect_location \$upstream_http_location;
      proxy_pass \$saved_redirect_location;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      $PEER_TLS
      ${NGINX_TUNING:-proxy_buffers 16 256k; proxy_buffer_size 16k; proxy_busy_buffers_size 512k; proxy_max_temp_file_size 0;}
    }
  }
}
NGINX
# The same recipe with nginx's cache: the blob's path is the key (the signed storage URL
# changes), in both locations, so that a hit is answered before the registry is asked and a
# miss is stored as storage answers it; one fill per key at a time (proxy_cache_lock).
cat > "$WORK/cache.conf" <<NGINX
worker_processes 2;
pid $WORK/cache.pid;
error_log $WORK/cache-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/tmp;
  proxy_temp_path $WORK/tmp;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=blobs:10m max_size=8g inactive=7d use_temp_path=off;
  upstream registry { server 127.0.0.1:7000; keepalive 64; }
  server {
    listen 127.0.0.1:7008 backlog=4096;
    location /v2/ {
      proxy_cache blobs; proxy_cache_key \$uri; proxy_cache_valid 200 7d; proxy_cache_lock on;
      proxy_pass http://registry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_intercept_errors on;
      error_page 301 302 303 307 308 = @handle_redirect;
    }
    location @handle_redirect {
      proxy_cache blobs; proxy_cache_key \$uri; proxy_cache_valid 200 7d; proxy_cache_lock on;
      set \$saved_redirect_location \$upstream_http_location;
      proxy_pass \$saved_redirect_location;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      $PEER_TLS
      proxy_buffers 16 256k; proxy_buffer_size 16k; proxy_busy_buffers_size 512k;
    }
  }
}
NGINX
nginx -c "$WORK/storage.conf" -p "$WORK"
nginx -c "$WORK/peer.conf" -p "$WORK"
read -r -a VARIANTS <<<"${VARIANTS:-direct nginx bare mirror cached verify store ncache fill}"
PROXIES=(); for v in "${VARIANTS[@]}"; do [[ $v != direct ]] && PROXIES+=("$v"); done
if [[ $STORAGE == https && " ${VARIANTS[*]} " == *" bare "* ]]; then echo "the bare follower speaks plain http only" >&2; exit 2; fi
has() { [[ " ${VARIANTS[*]} " == *" $1 "* ]]; }
"$BIN/bench_registry_stand_in" 127.0.0.1:7000 "$STORAGE_URL" & PIDS+=($!)
BARE='' MIRROR='' CACHED='' VERIFY='' ALT=''
if has bare; then "$BIN/bench_bare_follower" 127.0.0.1:7004 http://127.0.0.1:7000 & PIDS+=($!); BARE=$!; fi
MIRROR_FLAGS=(--upstream bench=http://127.0.0.1:7000 --storage-host "$STORAGE_HOST" "${MIRROR_TLS[@]}" --log warn --blob-store none)
STORE_FLAGS=(--upstream bench=http://127.0.0.1:7000 --storage-host "$STORAGE_HOST" "${MIRROR_TLS[@]}" --log warn --blob-store-max-size 8GiB)
# The plain mirror runs with the redirect cache off: every request asks the registry.
read -r -a COLD <<<"${COLD_FLAGS---redirect-cache 0}"
if has mirror; then "$ROOT/target/release/registry-mirror" --listen 127.0.0.1:7003 "${MIRROR_FLAGS[@]}" "${COLD[@]}" & PIDS+=($!); MIRROR=$!; fi
if has cached; then "$ROOT/target/release/registry-mirror" --listen 127.0.0.1:7005 "${MIRROR_FLAGS[@]}" & PIDS+=($!); CACHED=$!; fi
if has verify; then "$ROOT/target/release/registry-mirror" --listen 127.0.0.1:7006 "${MIRROR_FLAGS[@]}" --redirect-cache 0 --verify-digests & PIDS+=($!); VERIFY=$!; fi
read -r -a ALT_EXTRA <<<"${ALT_FLAGS:-}"
if has alt; then "${ALT_BIN:?ALT_BIN names the other build}" --listen 127.0.0.1:7007 "${MIRROR_FLAGS[@]}" "${COLD[@]}" "${ALT_EXTRA[@]}" & PIDS+=($!); ALT=$!; fi
STORE='' FILL='' NCACHE=''
if has store; then "$ROOT/target/release/registry-mirror" --listen 127.0.0.1:7009 "${STORE_FLAGS[@]}" --blob-store "$WORK/store" & PIDS+=($!); STORE=$!; fi
ALTSTORE=''
if has altstore; then "${ALT_BIN:?ALT_BIN names the other build}" --listen 127.0.0.1:7012 "${STORE_FLAGS[@]}" --blob-store "$WORK/altstore" & PIDS+=($!); ALTSTORE=$!; fi
if has ncache; then nginx -c "$WORK/cache.conf" -p "$WORK"; NCACHE=yes; fi
# fill_restart: the fill variant started again on an empty store (a cold start, each measure).
fill_restart() {
  [[ -n $FILL ]] && { kill "$FILL"; wait "$FILL" 2>/dev/null || true; }
  rm -rf "$WORK/fill-store"
  "$ROOT/target/release/registry-mirror" --listen 127.0.0.1:7010 "${STORE_FLAGS[@]}" "${COLD[@]}" --blob-store "$WORK/fill-store" & PIDS+=($!); FILL=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null --max-time 1 http://127.0.0.1:7010/healthz && return 0; sleep 0.05; done
  echo "the fill variant did not start" >&2; exit 1
}
if has fill; then fill_restart; fi
sleep 1

# blob paths: the stand-in's digests are the file names; the mirror and the bare follower
# take the registry path under /v2/.
url() { # variant name
  case $1 in
    direct) echo "$STORAGE_URL/blobs/$2?X-Amz-Signature=x" ;;
    nginx) echo "http://127.0.0.1:7002/v2/bench/blobs/sha256:$2" ;;
    mirror) echo "http://127.0.0.1:7003/v2/bench/blobs/sha256:$2" ;;
    bare) echo "http://127.0.0.1:7004/v2/bench/blobs/sha256:$2" ;;
    cached) echo "http://127.0.0.1:7005/v2/bench/blobs/sha256:$2" ;;
    verify) echo "http://127.0.0.1:7006/v2/bench/blobs/sha256:$2" ;;
    alt) echo "http://127.0.0.1:7007/v2/bench/blobs/sha256:$2" ;;
    ncache) echo "http://127.0.0.1:7008/v2/bench/blobs/sha256:$2" ;;
    store) echo "http://127.0.0.1:7009/v2/bench/blobs/sha256:$2" ;;
    fill) echo "http://127.0.0.1:7010/v2/bench/blobs/sha256:$2" ;;
    altstore) echo "http://127.0.0.1:7012/v2/bench/blobs/sha256:$2" ;;
  esac
}
pids_of() { # the processes whose CPU and memory count for a variant
  case $1 in
    nginx) pgrep -P "$(cat "$WORK/peer.pid")" | tr '\n' ' ' ;;
    ncache) pgrep -f -P "$(cat "$WORK/cache.pid")" 'worker process' | tr '\n' ' ' ;;  # not the cache loader, which exits
    mirror) echo "$MIRROR" ;; bare) echo "$BARE" ;; cached) echo "$CACHED" ;; verify) echo "$VERIFY" ;; alt) echo "$ALT" ;;
    store) echo "$STORE" ;; fill) echo "$FILL" ;; altstore) echo "$ALTSTORE" ;;
    *) echo "" ;;
  esac
}
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
auth() { [[ $1 == direct ]] || echo "$TOKEN"; }

# The variants that check digests are asked for the blobs by their real ones (the others
# never look at the digest).
blob() { # variant name: the blob's name as the variant is asked for it
  case $1 in verify|store|altstore|fill|ncache) local v="REAL_$2"; echo "${!v}" ;; *) echo "$2" ;; esac
}

# Every variant answers correctly before anything is timed; the warm stores (store, ncache)
# hold the three blobs after it.
for v in "${VARIANTS[@]}"; do
  a=("${CURL_TLS[@]}"); [[ $v != direct ]] && a+=(-H "$TOKEN")
  for b in "$MID" "$GIB" "$SMALL"; do
    [[ $b != "$MID" && $v != store && $v != altstore && $v != ncache ]] && continue
    got=$(curl -s --max-time 60 "${a[@]}" -o /dev/null -w '%{http_code} %{size_download}' "$(url $v "$(blob $v $b)")")
    [[ $got == "200 $(stat -L -c %s "$WORK/blobs/$b")" ]] || { echo "$v answered: $got" >&2; exit 1; }
  done
done
for dir in ${STORE:+store} ${ALTSTORE:+altstore}; do
  for _ in $(seq 1 200); do [[ $(find "$WORK/$dir/blobs" -type f 2>/dev/null | wc -l) -ge 3 ]] && break; sleep 0.1; done
done
if [[ -n $FILL ]]; then fill_restart; fi

hwm_of() { # variant: its processes' high-water marks, KiB, summed
  local h=0; for p in $(pids_of $1); do h=$((h + $(awk '/VmHWM/ {print $2}' "/proc/$p/status"))); done; echo $h
}
declare -A HWM
keep_peak() { # variant: the largest high-water mark seen, across the resets of phase (c)
  local h; h=$(hwm_of $1); (( h > ${HWM[$1]:-0} )) && HWM[$1]=$h; return 0
}

TICK=$(getconf CLK_TCK)
declare -A A_MBS A_CPU B_RPS B_P50 B_P99 B_CPU C_WALL C_HWM D_RPS D_P99 D_CPU
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  for v in "${VARIANTS[@]}"; do
    [[ $v == fill ]] && fill_restart
    pids=$(pids_of $v); before=$(cpu_ticks $pids)
    a=("${CURL_TLS[@]}"); [[ $v != direct ]] && a+=(-H "$TOKEN")
    speed=$(curl -s --max-time 120 "${a[@]}" -o /dev/null -w '%{speed_download}' "$(url $v "$(blob $v $GIB)")")
    after=$(cpu_ticks $pids)
    A_MBS[$v]+="$(awk -v s="$speed" 'BEGIN{printf "%.1f", s/1e6}') "
    A_CPU[$v]+="$(awk -v d=$((after - before)) -v t="$TICK" 'BEGIN{printf "%.3f", d/t}') "
  done
  for v in "${VARIANTS[@]}"; do
    [[ $v == fill ]] && continue  # after its first request, a warm store: phase (d) instead
    pids=$(pids_of $v); before=$(cpu_ticks $pids)
    a=(); [[ $v != direct ]] && a=(-H "$TOKEN")  # wrk does not verify certificates
    out=$(wrk -t2 -c64 -d5s --latency "${a[@]}" "$(url $v "$(blob $v $SMALL)")")
    after=$(cpu_ticks $pids)
    if grep -qE "Non-2xx|Socket errors" <<<"$out"; then echo "wrk saw errors for $v:" >&2; grep -E "Non-2xx|Socket errors" <<<"$out" >&2; exit 1; fi
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    B_CPU[$v]+="$(awk -v d=$((after - before)) -v t="$TICK" -v n="$requests" 'BEGIN{printf "%.1f", d/t/n*1e6}') "
    B_RPS[$v]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    B_P50[$v]+="$(awk '$1=="50%" {print $2}' <<<"$out") "
    B_P99[$v]+="$(awk '$1=="99%" {print $2}' <<<"$out") "
  done
  for v in mirror fill; do
    has $v || continue
    [[ $v == fill ]] && fill_restart
    pids=$(pids_of $v); before=$(cpu_ticks $pids)
    out=$(wrk -t2 -c64 -d5s --latency -s "$WORK/pool.lua" "$(url $v x | sed 's|/v2/.*||')")
    after=$(cpu_ticks $pids)
    if grep -qE "Non-2xx|Socket errors" <<<"$out"; then echo "wrk saw errors for $v over the pool:" >&2; grep -E "Non-2xx|Socket errors" <<<"$out" >&2; exit 1; fi
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    D_CPU[$v]+="$(awk -v d=$((after - before)) -v t="$TICK" -v n="$requests" 'BEGIN{printf "%.1f", d/t/n*1e6}') "
    D_RPS[$v]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    D_P99[$v]+="$(awk '$1=="99%" {print $2}' <<<"$out") "
  done
  for v in "${PROXIES[@]}"; do
    [[ $v == fill ]] && fill_restart
    # The peak of this phase alone: reset each process's high-water mark (Linux, root),
    # after keeping the peak so far for the whole run's figure.
    keep_peak $v
    for p in $(pids_of $v); do echo 5 > "/proc/$p/clear_refs" 2>/dev/null || true; done
    start=$(date +%s.%N)
    jobs=()
    for i in $(seq 1 16); do
      curl -s --max-time 120 -H "$TOKEN" -o /dev/null -w '%{size_download}\n' "$(url $v "$(blob $v $MID)")" > "$WORK/parallel-$v-$i" &
      jobs+=($!)
    done
    wait "${jobs[@]}"
    end=$(date +%s.%N)
    [[ $(cat "$WORK"/parallel-$v-* | grep -c '^67108864$') == 16 ]] || { echo "parallel downloads through $v incomplete" >&2; exit 1; }
    C_WALL[$v]+="$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.2f", b-a}') "
    C_HWM[$v]+="$(hwm_of $v) "
  done
done
# The whole run's peak (every phase): what `ps` would show an operator.
for v in "${PROXIES[@]}"; do keep_peak $v; done

{
  echo "rounds $ROUNDS"
  echo "storage $STORAGE"
  for v in "${VARIANTS[@]}"; do
    echo "$v a_mbs ${A_MBS[$v]}"; echo "$v a_cpu ${A_CPU[$v]}"
    [[ -n ${B_RPS[$v]:-} ]] && { echo "$v b_rps ${B_RPS[$v]}"; echo "$v b_p50 ${B_P50[$v]}"; echo "$v b_p99 ${B_P99[$v]}"; echo "$v b_cpu ${B_CPU[$v]}"; }
    [[ -n ${B_RPS[$v]:-} ]] || true
    [[ -n ${C_WALL[$v]:-} ]] && echo "$v c_wall ${C_WALL[$v]}" && echo "$v c_hwm ${C_HWM[$v]}"
    [[ -n ${D_RPS[$v]:-} ]] && echo "$v d_rps ${D_RPS[$v]}" && echo "$v d_p99 ${D_P99[$v]}" && echo "$v d_cpu ${D_CPU[$v]}"
    [[ -n ${HWM[$v]:-} ]] && echo "$v hwm ${HWM[$v]}"
  done
} > "$WORK/results"
[[ -n ${RAW:-} ]] && cp "$WORK/results" "$RAW"
python3 "$ROOT/mirror/benches/macro/report.py" "$WORK/results"
