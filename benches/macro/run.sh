#!/usr/bin/env bash
# Macro benchmark on 127.0.0.1, bounded in time and count:
#
#   origin:  a registry stand-in (Rust, benches/macro/registry_stand_in.rs) answering blob
#            GETs that carry the Bearer token with an empty 307 to a pre-signed-looking URL;
#            nginx as the storage stand-in (sendfile, Range, 400 on any Authorization, 403 on
#            anything but GET). `tcp_nopush` is off: with it, nginx's TCP_CORK stalls
#            keep-alive clients ~40 ms on loopback and slows direct downloads 30-40%.
#   peer:    nginx following the redirect server-side with the usual recipe
#            (proxy_intercept_errors + error_page 307 = @handle_redirect, then
#            proxy_pass $upstream_http_location with Authorization cleared), keep-alive to
#            the registry, no temp files.
#   ours:    the axum example (release build) with SignedRedirectLayer.
#
# Measures, interleaving the variants: (a) one 1 GiB blob, MB/s and the proxy's CPU seconds
# per GiB; (b) a 64 KiB blob with wrk -c64: requests/s, p50, p99; (c) 16 parallel 64 MiB
# downloads: wall time, and the proxies' peak RSS. Prints a table and the ratios.
#
# usage: bash benches/macro/run.sh [ROUNDS]   (installs nginx, wrk and curl if missing)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROUNDS=${1:-3}
WORK=$(mktemp -d /tmp/tsr-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -f $WORK/storage.pid ]] && kill "$(cat "$WORK/storage.pid")" 2>/dev/null || true
  [[ -f $WORK/peer.pid ]] && kill "$(cat "$WORK/peer.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk curl >/dev/null
fi
(cd "$ROOT" && cargo build --release --quiet --example registry_mirror --example bench_registry_stand_in)

TOKEN="Authorization: Bearer benchtoken"
GIB=$(printf 'a%.0s' {1..64}); MID=$(printf 'b%.0s' {1..64}); SMALL=$(printf 'c%.0s' {1..64})
mkdir -p "$WORK/blobs" "$WORK/tmp"
chmod 755 "$WORK" "$WORK/blobs"  # nginx workers run unprivileged
head -c 1073741824 /dev/urandom > "$WORK/blobs/$GIB"
head -c 67108864 /dev/urandom > "$WORK/blobs/$MID"
head -c 65536 /dev/urandom > "$WORK/blobs/$SMALL"

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
  server {
    listen 127.0.0.1:7001 backlog=4096;
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
      proxy_buffers 32 64k;
      proxy_max_temp_file_size 0;
    }
  }
}
NGINX
nginx -c "$WORK/storage.conf" -p "$WORK"
nginx -c "$WORK/peer.conf" -p "$WORK"
"$ROOT/target/release/examples/bench_registry_stand_in" 127.0.0.1:7000 http://127.0.0.1:7001 & PIDS+=($!)
"$ROOT/target/release/examples/registry_mirror" --listen 127.0.0.1:7003 --upstream bench=http://127.0.0.1:7000 \
  --storage-host 127.0.0.1:7001 --log warn & PIDS+=($!)
OURS=$!
sleep 1

url() { # variant digest
  case $1 in
    direct) echo "http://127.0.0.1:7001/blobs/$2?X-Amz-Signature=x" ;;
    peer) echo "http://127.0.0.1:7002/v2/bench/blobs/sha256:$2" ;;
    ours) echo "http://127.0.0.1:7003/v2/bench/blobs/sha256:$2" ;;
  esac
}
peer_workers() { pgrep -P "$(cat "$WORK/peer.pid")" | tr '\n' ' '; }
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
proxy_pids() { case $1 in peer) peer_workers ;; ours) echo "$OURS" ;; *) echo "" ;; esac; }

# Every variant answers correctly before anything is timed.
for v in direct peer ours; do
  got=$(curl -s --max-time 60 -H "$TOKEN" -o /dev/null -w '%{http_code} %{size_download}' "$(url $v $MID)")
  [[ $v == direct ]] && got=$(curl -s --max-time 60 -o /dev/null -w '%{http_code} %{size_download}' "$(url $v $MID)")
  [[ $got == "200 67108864" ]] || { echo "$v answered: $got" >&2; exit 1; }
done

TICK=$(getconf CLK_TCK)
declare -A A_MBS A_CPU B_RPS B_P50 B_P99 B_CPU C_WALL
for round in $(seq 1 "$ROUNDS"); do
  for v in direct peer ours; do
    pids=$(proxy_pids $v)
    before=$(cpu_ticks $pids)
    hdr=(); [[ $v != direct ]] && hdr=(-H "$TOKEN")
    speed=$(curl -s --max-time 120 "${hdr[@]}" -o /dev/null -w '%{speed_download}' "$(url $v $GIB)")
    after=$(cpu_ticks $pids)
    A_MBS[$v]+="$(awk -v s="$speed" 'BEGIN{printf "%.1f", s/1e6}') "
    A_CPU[$v]+="$(awk -v d=$((after - before)) -v t="$TICK" 'BEGIN{printf "%.3f", d/t}') "
  done
  for v in peer ours; do
    pids=$(proxy_pids $v)
    before=$(cpu_ticks $pids)
    out=$(wrk -t2 -c64 -d5s --latency -H "$TOKEN" "$(url $v $SMALL)")
    after=$(cpu_ticks $pids)
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    B_CPU[$v]+="$(awk -v d=$((after - before)) -v t="$TICK" -v n="$requests" 'BEGIN{printf "%.1f", d/t/n*1e6}') "
    B_RPS[$v]+="$(awk '/Requests\/sec/ {print $2}' <<<"$out") "
    B_P50[$v]+="$(awk '$1=="50%" {print $2}' <<<"$out") "
    B_P99[$v]+="$(awk '$1=="99%" {print $2}' <<<"$out") "
    if grep -q "Non-2xx" <<<"$out"; then echo "wrk saw errors for $v:" >&2; grep -E "Non-2xx|Socket errors" <<<"$out" >&2; exit 1; fi
  done
  for v in peer ours; do
    start=$(date +%s.%N)
    jobs=()
    for i in $(seq 1 16); do
      curl -s --max-time 120 -H "$TOKEN" -o /dev/null -w '%{size_download}\n' "$(url $v $MID)" > "$WORK/parallel-$v-$i" &
      jobs+=($!)
    done
    wait "${jobs[@]}"
    cat "$WORK"/parallel-$v-* > "$WORK/parallel-$v"
    end=$(date +%s.%N)
    [[ $(grep -c '^67108864$' "$WORK/parallel-$v") == 16 ]] || { echo "parallel downloads through $v incomplete" >&2; exit 1; }
    C_WALL[$v]+="$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.2f", b-a}') "
  done
done
OURS_HWM=$(awk '/VmHWM/ {print $2}' "/proc/$OURS/status")
PEER_HWM=0; for p in $(peer_workers); do h=$(awk '/VmHWM/ {print $2}' "/proc/$p/status"); PEER_HWM=$((PEER_HWM + h)); done

python3 - "$ROUNDS" "$OURS_HWM" "$PEER_HWM" <<PY
import statistics as st, sys, re
rounds, ours_hwm, peer_hwm = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def nums(s): return [float(x) for x in s.split()]
def ms(s):
    out = []
    for x in s.split():
        v, u = re.match(r"([\d.]+)(us|ms|s)", x).groups()
        out.append(float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[u])
    return out
a_mbs = {"direct": nums("${A_MBS[direct]}"), "peer": nums("${A_MBS[peer]}"), "ours": nums("${A_MBS[ours]}")}
a_cpu = {"peer": nums("${A_CPU[peer]}"), "ours": nums("${A_CPU[ours]}")}
b = {v: (nums(r), ms(p50), ms(p99)) for v, r, p50, p99 in [
    ("peer", "${B_RPS[peer]}", "${B_P50[peer]}", "${B_P99[peer]}"),
    ("ours", "${B_RPS[ours]}", "${B_P50[ours]}", "${B_P99[ours]}")]}
c = {"peer": nums("${C_WALL[peer]}"), "ours": nums("${C_WALL[ours]}")}
b_cpu = {"peer": nums("${B_CPU[peer]}"), "ours": nums("${B_CPU[ours]}")}
m = st.median
print(f"\nmacro benchmark, medians of {rounds} interleaved rounds (127.0.0.1, 2 shared cores)\n")
print("| measure | direct | peer (nginx) | ours (axum example) |")
print("|---|---:|---:|---:|")
print(f"| (a) 1 GiB blob, MB/s | {m(a_mbs['direct']):.0f} | {m(a_mbs['peer']):.0f} | {m(a_mbs['ours']):.0f} |")
print(f"| (a) proxy CPU s per GiB | | {m(a_cpu['peer']):.2f} | {m(a_cpu['ours']):.2f} |")
print(f"| (b) 64 KiB blob, wrk -c64, req/s | | {m(b['peer'][0]):.0f} | {m(b['ours'][0]):.0f} |")
print(f"| (b) p50 / p99 ms | | {m(b['peer'][1]):.2f} / {m(b['peer'][2]):.2f} | {m(b['ours'][1]):.2f} / {m(b['ours'][2]):.2f} |")
print(f"| (b) proxy CPU us per request | | {m(b_cpu['peer']):.0f} | {m(b_cpu['ours']):.0f} |")
print(f"| (c) 16 x 64 MiB in parallel, wall s | | {m(c['peer']):.2f} | {m(c['ours']):.2f} |")
print(f"| (c) proxy peak RSS MiB | | {peer_hwm/1024:.1f} (all workers) | {ours_hwm/1024:.1f} |")
r = lambda x, y: x / y if y else float("nan")
checks = [
    ("(a) ours/peer MB/s >= 1.1", r(m(a_mbs['ours']), m(a_mbs['peer'])), lambda v: v >= 1.1),
    ("(a) ours/direct MB/s >= 0.8", r(m(a_mbs['ours']), m(a_mbs['direct'])), lambda v: v >= 0.8),
    ("(a) ours/peer CPU per GiB < 1", r(m(a_cpu['ours']), m(a_cpu['peer'])), lambda v: v < 1),
    ("(b) ours/peer req/s >= 1.5", r(m(b['ours'][0]), m(b['peer'][0])), lambda v: v >= 1.5),
    ("(b) ours/peer CPU per request", r(m(b_cpu['ours']), m(b_cpu['peer'])), None),
    ("(b) ours/peer p99 <= 0.7", r(m(b['ours'][2]), m(b['peer'][2])), lambda v: v <= 0.7),
    ("(c) ours/peer wall", r(m(c['ours']), m(c['peer'])), None),
    ("(c) ours peak RSS MiB < 48", ours_hwm / 1024, lambda v: v < 48),
]
print()
for name, v, ok in checks:
    print(f"{'info' if ok is None else 'met ' if ok(v) else 'MISS'} {name}: {v:.2f}")
print("ratios: " + ", ".join(f"{n.split(' ')[0]} {n.split(' ', 1)[1].rsplit(' ', 2)[0]} {v:.2f}" for n, v, _ in checks))
PY
