#!/usr/bin/env bash
# End-to-end: software nobody on this team wrote, run the way users run it.
#
#   Debian's docker-registry (CNCF distribution 2.8) with the S3 storage driver, redirects on
#   (blob GET and HEAD answer 307 to URLs pre-signed for that method) and htpasswd auth, on
#   two stores:
#     - s3s-fs: verifies every SigV4 signature (but accepts a second auth mechanism);
#     - s3rver: rejects a pre-signed request that also carries Authorization, as S3 does
#       ("Only one auth mechanism allowed").
#   Debian's skopeo pulls a generated image through the mirror (`registry-mirror`) and
#   through the library's two examples (`axum_proxy`, `hyper_proxy`); every blob's sha256 is
#   checked; then a blob GET (200 from the proxy itself), a HEAD and a Range request with
#   curl. A negative control pulls through the mirror with `--redirects naive` (replaying the
#   request) and must fail against s3rver.
#
#   Also: Debian's containerd (its own root, state and socket) fetches the image through the
#   mirror with a `hosts.toml` mirror (`ctr content fetch --hosts-dir`: the client that sends
#   `?ns=`); the registry served over https with its own CA and storage on plain http
#   (refused without `--allow-http-storage`, pulled with it); and skopeo pulling with no
#   credentials through a mirror that logs in to the htpasswd registry with its own.
#
#   And Docker itself (docker.sh, sourced): Debian's dockerd 20.10 with its own socket, roots
#   and containerd under the suite's state dir, `--registry-mirror` pointing at the mirror,
#   pulls `e2e/image:v1` as a Docker Hub name: anonymously through a mirror that logs in
#   upstream itself, and after `docker login` to an `--htpasswd` mirror.
#
#   The blob store through an outage: skopeo, containerd and Docker pull the image through a
#   mirror that keeps what it serves; then its registry and storage are stopped, the mirror
#   restarts on its store, and all three pull the image again, every digest checked, no blob
#   asked upstream. Every mirror keeps its state under the suite's own directory.
#
# Installs what it needs (apt, cargo install, npm), uses fixed loopback ports, stops
# everything it started by PID. Prints one summary line per proxy and store, and a final
# "N passed, M failed" line; exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)  # the workspace
HERE="$ROOT/mirror/scripts/e2e"
MIRROR="$ROOT/target/debug/registry-mirror"
EXAMPLES="$ROOT/target/debug/examples"
WORK=$(mktemp -d /tmp/tsr-e2e.XXXXXX)
LOGS="$WORK/logs"
mkdir -p "$LOGS"
PIDS=()
PASSED=0
FAILED=0
USER_PASS="e2e:e2e-password"
S3FS_KEYS=(AKIDE2ESTORE e2e-store-secret-key)

cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # dockerd's mounts under $WORK, /etc/docker/key.json if the suite created it.
  if declare -F docker_cleanup >/dev/null; then docker_cleanup || true; fi
  if [[ $status -ne 0 || $FAILED -ne 0 ]]; then
    echo "--- logs (tails) from $LOGS"
    for f in "$LOGS"/*.log; do [[ -e $f ]] || continue; echo "### $f"; tail -n 15 "$f" || true; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
# Interrupted, still clean up (dockerd's mounts and key.json included): exit runs the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[e2e] %s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); log "ok: $*"; }
fail() { FAILED=$((FAILED + 1)); log "FAILED: $*"; }
# shellcheck source=docker.sh
source "$HERE/docker.sh"

# ---------------------------------------------------------------- install
install_tools() {
  if ! command -v docker-registry >/dev/null || ! command -v skopeo >/dev/null || ! command -v htpasswd >/dev/null \
      || ! command -v containerd >/dev/null || ! command -v openssl >/dev/null; then
    log "installing docker-registry, skopeo, apache2-utils with apt"
    # No service may start on its own (a system registry on :5000 would clash).
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry skopeo apache2-utils curl python3 containerd openssl >/dev/null
  fi
  if ! command -v dockerd >/dev/null; then
    log "installing docker.io (dockerd) with apt"
    # policy-rc.d: neither dockerd nor containerd may start as a service.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    # No recommends: apparmor, cgroupfs-mount, needrestart... are not needed.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  fi
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
  if ! command -v s3s-fs >/dev/null; then
    log "installing s3s-fs 0.14.1 with cargo"
    cargo install s3s-fs --version 0.14.1 --features binary --locked --quiet
  fi
  S3RVER="$ROOT/target/e2e-npm/node_modules/.bin/s3rver"
  if [[ ! -x $S3RVER ]]; then
    log "installing s3rver 3 with npm"
    npm install --prefix "$ROOT/target/e2e-npm" --no-audit --no-fund --silent s3rver@3 >/dev/null
  fi
  log "building the mirror and the examples"
  (cd "$ROOT" && cargo build --quiet -p registry-mirror --bin registry-mirror \
    && cargo build --quiet -p tower-signed-redirect --example axum_proxy --example hyper_proxy)
}

# ---------------------------------------------------------------- helpers
start() { # name, command...
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
  eval "PID_${name//-/_}=$!"
}

stop() { # name
  local var="PID_${1//-/_}"
  kill "${!var}" 2>/dev/null || true
  wait "${!var}" 2>/dev/null || true
}

wait_http() { # url: any HTTP answer within 30 s
  for _ in $(seq 1 150); do
    if curl -s -o /dev/null --max-time 1 "$1"; then return 0; fi
    sleep 0.2
  done
  echo "nothing answered at $1" >&2
  return 1
}

registry_config() { # file, port, storage yaml, [extra lines under http:]
  cat >"$1" <<YAML
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
$3
  redirect:
    disable: false
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$2
  secret: e2e-http-secret
${4:-}
health:
  storagedriver:
    enabled: false
YAML
}

s3_storage() { # endpoint, access key, secret key
  cat <<YAML
  s3:
    region: us-east-1
    regionendpoint: $1
    bucket: registry
    accesskey: $2
    secretkey: $3
    secure: false
    v4auth: true
YAML
}

# ---------------------------------------------------------------- set-up
install_tools
cd "$WORK"

log "generating the test image"
python3 "$HERE/make-image.py" "$WORK/image" 33

log "loading it into a temporary filesystem-backed registry"
registry_config fsreg.yml 5100 "  filesystem:
    rootdirectory: $WORK/fsreg"
start fsreg env -u AWS_CA_BUNDLE docker-registry serve fsreg.yml
wait_http http://127.0.0.1:5100/v2/
timeout 300 skopeo copy --quiet --dest-tls-verify=false "dir:$WORK/image" docker://127.0.0.1:5100/e2e/image:v1
stop fsreg

log "starting the stores: s3s-fs on :9000, s3rver on :9001"
mkdir -p "$WORK/s3fs/registry" "$WORK/s3rver"
cp -r "$WORK/fsreg/docker" "$WORK/s3fs/registry/"
start s3s-fs s3s-fs --host 127.0.0.1 --port 9000 --access-key "${S3FS_KEYS[0]}" --secret-key "${S3FS_KEYS[1]}" "$WORK/s3fs"
start s3rver "$S3RVER" -d "$WORK/s3rver" -a 127.0.0.1 -p 9001 --configure-bucket registry
wait_http http://127.0.0.1:9000/
wait_http http://127.0.0.1:9001/
(cd "$WORK/fsreg" && find docker -type f) | while read -r key; do
  file="$WORK/fsreg/$key"
  curl -sf --max-time 60 -o /dev/null -X PUT --data-binary "@$file" --aws-sigv4 "aws:amz:us-east-1:s3" --user S3RVER:S3RVER \
    -H "x-amz-content-sha256: $(sha256sum "$file" | cut -d' ' -f1)" "http://127.0.0.1:9001/registry/$key"
done

log "starting the registries on S3 with htpasswd auth: :5010 on s3s-fs, :5011 on s3rver"
htpasswd -Bbn "${USER_PASS%%:*}" "${USER_PASS#*:}" > htpasswd
for store in s3s-fs s3rver; do
  if [[ $store == s3s-fs ]]; then port=5010; storage=$(s3_storage http://127.0.0.1:9000 "${S3FS_KEYS[@]}")
  else port=5011; storage=$(s3_storage http://127.0.0.1:9001 S3RVER S3RVER); fi
  registry_config "registry-$store.yml" "$port" "$storage"
  cat >>"registry-$store.yml" <<YAML
auth:
  htpasswd:
    realm: e2e
    path: $WORK/htpasswd
YAML
  start "registry-$store" env -u AWS_CA_BUNDLE docker-registry serve "registry-$store.yml"
  wait_http "http://127.0.0.1:$port/v2/"
done

MANIFEST="$WORK/image/manifest.json"
BIG=$(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(max(m['layers'], key=lambda l: l['size'])['digest'])" "$MANIFEST")
BIG_FILE="$WORK/image/${BIG#sha256:}"
BIG_SIZE=$(stat -c %s "$BIG_FILE")

# The registries really redirect, to URLs signed for the request's method.
for port in 5010 5011; do
  for method in GET HEAD; do
    flag=(); [[ $method == HEAD ]] && flag=(-I)
    loc=$(curl -s --max-time 30 -o /dev/null -w '%{redirect_url}' "${flag[@]}" -u "$USER_PASS" "http://127.0.0.1:$port/v2/e2e/image/blobs/$BIG")
    if [[ $loc == *X-Amz-Signature=* ]]; then pass "registry :$port answers $method with a pre-signed redirect"
    else fail "registry :$port did not redirect $method (Location: ${loc:-none})"; fi
  done
done

# ---------------------------------------------------------------- checks
# pull_and_check NAME PORT: skopeo pull through the proxy, every blob verified, then
# GET (200 from the proxy), HEAD and Range with curl.
# With a third argument `nocreds`, the client sends no credentials (the proxy has its own);
# with `example`, the proxy is one of the library's examples, which write no JSON log.
pull_and_check() {
  local name=$1 port=$2 out="$WORK/pulled-$1" ok=1 blobs=0
  local skopeo_creds=(--src-creds "$USER_PASS") curl_creds=(-u "$USER_PASS")
  if [[ ${3:-} == nocreds ]]; then skopeo_creds=(--src-no-creds); curl_creds=(); fi
  if ! timeout 300 skopeo copy --quiet --src-tls-verify=false "${skopeo_creds[@]}" \
      "docker://127.0.0.1:$port/e2e/image:v1" "dir:$out" >"$LOGS/skopeo-$name.log" 2>&1; then
    fail "$name: skopeo copy"; ok=0
  else
    for f in "$out"/*; do
      local base; base=$(basename "$f")
      [[ $base == manifest.json || $base == version ]] && continue
      blobs=$((blobs + 1))
      if [[ $(sha256sum "$f" | cut -d' ' -f1) != "$base" ]]; then fail "$name: blob $base digest mismatch"; ok=0; fi
    done
    if [[ $blobs -eq 3 ]]; then pass "$name: skopeo pulled 3 blobs, digests verified"; else fail "$name: $blobs blobs pulled"; ok=0; fi
  fi
  local url="http://127.0.0.1:$port/v2/e2e/image/blobs/$BIG"
  local code
  code=$(curl -s --max-time 120 -o "$WORK/get-$name" -w '%{http_code}' "${curl_creds[@]}" "$url")
  if [[ $code == 200 && $(sha256sum "$WORK/get-$name" | cut -d' ' -f1) == "${BIG#sha256:}" ]]; then pass "$name: blob GET answered 200 by the proxy, sha256 ok"
  else fail "$name: blob GET answered $code"; ok=0; fi
  local head
  head=$(curl -s --max-time 30 -I "${curl_creds[@]}" "$url" | tr -d '\r')
  if grep -q '^HTTP/1.1 200' <<<"$head" && grep -qi "^content-length: $BIG_SIZE\$" <<<"$head"; then pass "$name: HEAD 200 with Content-Length $BIG_SIZE"
  else fail "$name: HEAD: $(head -n1 <<<"$head")"; ok=0; fi
  code=$(curl -s --max-time 30 -o "$WORK/range-$name" -w '%{http_code}' "${curl_creds[@]}" -H 'Range: bytes=1048576-2097151' "$url")
  if [[ $code == 206 ]] && cmp -s "$WORK/range-$name" <(tail -c +1048577 "$BIG_FILE" | head -c 1048576); then pass "$name: Range 206, bytes identical"
  else fail "$name: Range answered $code"; ok=0; fi
  if [[ ${3:-} != example ]]; then
    local followed
    followed=$(grep -c '"redirect":"followed"' "$LOGS/proxy-$name.log" || true)
    if [[ $followed -ge 3 ]] && ! grep -q 'X-Amz-Signature=[0-9a-f]' "$LOGS/proxy-$name.log"; then
      pass "$name: the proxy log shows $followed followed redirects, signatures redacted"
    else fail "$name: proxy log: $followed followed redirects, or a signature in it"; ok=0; fi
  fi
  if [[ $ok == 1 ]]; then echo "e2e $name: PASS (pull + 3 digests, GET 200, HEAD, Range)"; else echo "e2e $name: FAIL"; fi
}

port=5200
for store in s3s-fs s3rver; do
  if [[ $store == s3s-fs ]]; then upstream=5010; storage=127.0.0.1:9000; else upstream=5011; storage=127.0.0.1:9001; fi
  name="registry-mirror-$store"
  start "proxy-$name" "$MIRROR" --data-dir "$WORK/data/proxy-$name" --listen "127.0.0.1:$port" \
    --upstream "e2e=http://127.0.0.1:$upstream" --storage-host "$storage" --log-format json
  wait_http "http://127.0.0.1:$port/v2/"
  pull_and_check "$name" "$port"
  port=$((port + 1))
  # The examples: one upstream, the client's credentials, challenges passed as they are.
  for example in axum_proxy hyper_proxy; do
    name="$example-$store"
    start "proxy-$name" "$EXAMPLES/$example" "127.0.0.1:$port" "http://127.0.0.1:$upstream" "$storage"
    wait_http "http://127.0.0.1:$port/v2/"
    pull_and_check "$name" "$port" example
    port=$((port + 1))
  done
done

log "negative control: the mirror replaying the request (--redirects naive) against s3rver"
start proxy-naive "$MIRROR" --data-dir "$WORK/data/proxy-naive" --listen 127.0.0.1:5299 \
  --upstream "e2e=http://127.0.0.1:5011" --redirects naive
wait_http http://127.0.0.1:5299/v2/
if timeout 300 skopeo copy --quiet --src-tls-verify=false --src-creds "$USER_PASS" \
    docker://127.0.0.1:5299/e2e/image:v1 "dir:$WORK/pulled-naive" >"$LOGS/skopeo-naive.log" 2>&1; then
  fail "negative control: the naive pull succeeded, so this suite could not tell"
  echo "e2e negative-control: FAIL"
else
  body=$(curl -s --max-time 30 -u "$USER_PASS" "http://127.0.0.1:5299/v2/e2e/image/blobs/$BIG")
  if grep -q "Only one auth mechanism allowed" <<<"$body"; then
    pass "negative control: naive pull failed with the store's 'Only one auth mechanism allowed'"
    echo "e2e negative-control: PASS (naive follow fails as it does on S3)"
  else
    fail "negative control failed for another reason: ${body:0:200}"
    echo "e2e negative-control: FAIL"
  fi
fi

# ---------------------------------------------------------------- containerd
log "containerd: its own root, state and socket; ctr content fetch through the mirror (hosts.toml)"
CTD="$WORK/containerd"
mkdir -p "$CTD"
cat >"$CTD/config.toml" <<TOML
version = 2
root = "$CTD/root"
state = "$CTD/state"
# Only the content store is needed: no CRI, no runtimes, and only the native snapshotter
# (the metadata store, which content and leases need, wants one).
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.runtime.v1.linux", "io.containerd.runtime.v2.task",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.monitor.v1.cgroups",
  "io.containerd.nri.v1.nri"]
[grpc]
  address = "$CTD/containerd.sock"
[ttrpc]
  address = "$CTD/containerd.sock.ttrpc"
[plugins."io.containerd.metadata.v1.bolt"]
  # Each namespace fetches its own copy: every fetch really goes through the mirror.
  content_sharing_policy = "isolated"
TOML
start containerd containerd --config "$CTD/config.toml"
for _ in $(seq 1 100); do [[ -S $CTD/containerd.sock ]] && break; sleep 0.1; done
CTR=(ctr --address "$CTD/containerd.sock")
WANT=$(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(' '.join([m['config']['digest']] + [l['digest'] for l in m['layers']]))" "$MANIFEST")
port=5300
for example in registry-mirror; do
  name="containerd-$example"
  # The first upstream answers nothing: only containerd's ?ns= can pick the right one.
  start "proxy-$name" "$MIRROR" --data-dir "$WORK/data/proxy-$name" --listen "127.0.0.1:$port" \
    --upstream "decoy=http://127.0.0.1:1,127.0.0.1:5010=http://127.0.0.1:5010" --storage-host 127.0.0.1:9000 --log-format json
  wait_http "http://127.0.0.1:$port/v2/"
  hosts="$WORK/hosts-$example"
  mkdir -p "$hosts/127.0.0.1:5010"
  cat >"$hosts/127.0.0.1:5010/hosts.toml" <<TOML
server = "http://127.0.0.1:5010"

[host."http://127.0.0.1:$port"]
  capabilities = ["pull", "resolve"]
TOML
  ok=1
  if timeout 300 "${CTR[@]}" -n "$name" content fetch --hosts-dir "$hosts" --user "$USER_PASS" \
      127.0.0.1:5010/e2e/image:v1 >"$LOGS/ctr-$example.log" 2>&1; then
    for d in $WANT; do
      got=$("${CTR[@]}" -n "$name" content get "$d" | sha256sum | cut -d' ' -f1)
      [[ "sha256:$got" == "$d" ]] || { fail "$name: $d in containerd's store has sha256:$got"; ok=0; }
    done
    via=$(grep -c '"upstream":"127.0.0.1:5010"' "$LOGS/proxy-$name.log" || true)
    followed=$(grep -c '"redirect":"followed"' "$LOGS/proxy-$name.log" || true)
    if [[ $via -ge 4 && $followed -ge 3 ]]; then
      pass "$name: containerd fetched the image through the mirror (?ns= chose the upstream: $via requests, $followed followed redirects), digests verified"
    else
      fail "$name: the mirror log shows $via requests for the ns upstream, $followed followed redirects"; ok=0
    fi
  else
    fail "$name: ctr content fetch (see $LOGS/ctr-$example.log)"; ok=0
  fi
  if [[ $ok == 1 ]]; then echo "e2e $name: PASS"; else echo "e2e $name: FAIL"; fi
  port=$((port + 1))
done

# ---------------------------------------------------------------- https registry, http storage
log "the registry over https with its own CA, storage on plain http (s3s-fs)"
# A private CA, and the registry's certificate signed by it (rustls refuses a CA
# certificate as a server's).
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/ca.key" -out "$WORK/ca.crt" -days 2 \
  -subj "/CN=e2e private CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$WORK/tls.key" -out "$WORK/tls.csr" -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$WORK/tls.ext"
openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
  -out "$WORK/tls.crt" -days 2 -extfile "$WORK/tls.ext" 2>/dev/null
registry_config registry-tls.yml 5012 "$(s3_storage http://127.0.0.1:9000 "${S3FS_KEYS[@]}")" "  tls:
    certificate: $WORK/tls.crt
    key: $WORK/tls.key"
cat >>registry-tls.yml <<YAML
auth:
  htpasswd:
    realm: e2e
    path: $WORK/htpasswd
YAML
start registry-tls env -u AWS_CA_BUNDLE docker-registry serve registry-tls.yml
for _ in $(seq 1 150); do curl -s -o /dev/null --max-time 1 --cacert "$WORK/ca.crt" https://127.0.0.1:5012/v2/ && break; sleep 0.2; done
TLS_UPSTREAM=(--upstream "e2e=https://127.0.0.1:5012" --upstream-ca "$WORK/ca.crt" --storage-host 127.0.0.1:9000 --log-format json)
start proxy-tls-refused "$MIRROR" --data-dir "$WORK/data/proxy-tls-refused" --listen 127.0.0.1:5310 "${TLS_UPSTREAM[@]}"
wait_http http://127.0.0.1:5310/v2/
body=$(curl -s --max-time 30 -u "$USER_PASS" -w ' %{http_code}' "http://127.0.0.1:5310/v2/e2e/image/blobs/$BIG")
if [[ $body == *" 502" && $body == *"--allow-http-storage"* && $body != *X-Amz-Signature=[0-9a-f]* ]]; then
  pass "https registry, http storage: refused without --allow-http-storage, and the 502 says so"
else
  fail "https registry, http storage without the flag answered: ${body:0:300}"
fi
name="registry-mirror-https-registry-http-storage"
start "proxy-$name" "$MIRROR" --data-dir "$WORK/data/proxy-$name" --listen 127.0.0.1:5311 "${TLS_UPSTREAM[@]}" --allow-http-storage
wait_http "http://127.0.0.1:5311/v2/"
pull_and_check "$name" 5311

# ---------------------------------------------------------------- the mirror's own credentials
log "the mirror logs in to the htpasswd registry itself; skopeo sends no credentials"
name="registry-mirror-own-credentials"
start "proxy-$name" "$MIRROR" --data-dir "$WORK/data/proxy-$name" --listen 127.0.0.1:5320 \
  --upstream "e2e=http://127.0.0.1:5011" --storage-host 127.0.0.1:9001 --log-format json \
  --upstream-user "${USER_PASS%%:*}" --upstream-password "${USER_PASS#*:}"
wait_http http://127.0.0.1:5320/v2/
pull_and_check "$name" 5320 nocreds
if grep -q "${USER_PASS#*:}" "$LOGS/proxy-$name.log"; then
  fail "$name: the mirror's password is in its log"
else
  pass "$name: the mirror's password is not in its log"
fi

# ---------------------------------------------------------------- the blob store through an outage
# A registry and a store of their own (:5013 on s3s-fs :9002), and a mirror with its own
# login and its blob store (:5330): skopeo, containerd and Docker pull the image through it;
# then the registry and its storage stop, the mirror restarts on its store, and the same
# image pulls again with all three, every digest checked and no blob asked upstream.
log "the blob store: skopeo, containerd and Docker pull through a mirror that keeps what it serves"
mkdir -p "$WORK/s3fs-outage/registry"
cp -r "$WORK/fsreg/docker" "$WORK/s3fs-outage/registry/"
start s3s-fs-outage s3s-fs --host 127.0.0.1 --port 9002 --access-key "${S3FS_KEYS[0]}" --secret-key "${S3FS_KEYS[1]}" "$WORK/s3fs-outage"
wait_http http://127.0.0.1:9002/
registry_config registry-outage.yml 5013 "$(s3_storage http://127.0.0.1:9002 "${S3FS_KEYS[@]}")"
cat >>registry-outage.yml <<YAML
auth:
  htpasswd:
    realm: e2e
    path: $WORK/htpasswd
YAML
start registry-outage env -u AWS_CA_BUNDLE docker-registry serve registry-outage.yml
wait_http http://127.0.0.1:5013/v2/
OUTAGE_PORT=5330
OUTAGE_MIRROR=("$MIRROR" --data-dir "$WORK/data/proxy-outage" --listen "127.0.0.1:$OUTAGE_PORT"
  --upstream "docker.io=http://127.0.0.1:5013" --storage-host 127.0.0.1:9002 --log-format json
  --upstream-user "${USER_PASS%%:*}" --upstream-password "${USER_PASS#*:}")
start proxy-outage "${OUTAGE_MIRROR[@]}"
wait_http "http://127.0.0.1:$OUTAGE_PORT/v2/"
OUTAGE_HOSTS="$WORK/hosts-outage"
mkdir -p "$OUTAGE_HOSTS/127.0.0.1:5013"
cat >"$OUTAGE_HOSTS/127.0.0.1:5013/hosts.toml" <<TOML
server = "http://127.0.0.1:5013"

[host."http://127.0.0.1:$OUTAGE_PORT"]
  capabilities = ["pull", "resolve"]
TOML
OUTAGE_DOWN=no

# skopeo_verified NAME: skopeo pulls the image through the outage mirror without
# credentials; every blob's sha256 is checked.
skopeo_verified() {
  local out="$WORK/pulled-$1" blobs=0
  timeout 300 skopeo copy --quiet --src-tls-verify=false --src-no-creds \
    "docker://127.0.0.1:$OUTAGE_PORT/e2e/image:v1" "dir:$out" >"$LOGS/skopeo-$1.log" 2>&1 || return 1
  for f in "$out"/*; do
    local base; base=$(basename "$f")
    [[ $base == manifest.json || $base == version ]] && continue
    [[ $(sha256sum "$f" | cut -d' ' -f1) == "$base" ]] || return 1
    blobs=$((blobs + 1))
  done
  [[ $blobs -eq 3 ]]
}

# ctr_verified NAMESPACE: containerd fetches the image through the outage mirror into a
# namespace of its own (its own copy); every digest is checked.
ctr_verified() {
  timeout 300 "${CTR[@]}" -n "$1" content fetch --hosts-dir "$OUTAGE_HOSTS" \
    127.0.0.1:5013/e2e/image:v1 >"$LOGS/ctr-$1.log" 2>&1 || return 1
  local d got
  for d in $WANT; do
    got=$("${CTR[@]}" -n "$1" content get "$d" | sha256sum | cut -d' ' -f1)
    [[ "sha256:$got" == "$d" ]] || return 1
  done
}

# The blob GETs the outage mirror has sent its upstream.
outage_blob_gets() {
  curl -s --max-time 5 "http://127.0.0.1:$OUTAGE_PORT/metrics" \
    | sed -n 's/^registry_mirror_upstream_requests_total{method="GET",route="blob"} \([0-9]*\)$/\1/p' \
    | head -n 1 | grep . || echo 0
}

# outage_stop: the registry and its storage stop; the mirror restarts on its store (so what
# it serves next comes from the store, not from memory). Once.
outage_stop() {
  [[ $OUTAGE_DOWN == yes ]] && return 0
  OUTAGE_DOWN=yes
  stop registry-outage
  stop s3s-fs-outage
  stop proxy-outage
  start proxy-outage "${OUTAGE_MIRROR[@]}"
  wait_http "http://127.0.0.1:$OUTAGE_PORT/v2/"
  if curl -s -o /dev/null --max-time 2 http://127.0.0.1:5013/v2/ || curl -s -o /dev/null --max-time 2 http://127.0.0.1:9002/; then
    fail "outage: the registry or its storage still answers"
  else
    pass "outage: the registry (:5013) and its storage (:9002) are stopped; the mirror restarted on its store"
  fi
}

if skopeo_verified outage-before; then pass "blob store: skopeo pulled through the mirror, digests verified"
else fail "blob store: skopeo pull before the outage (see $LOGS/skopeo-outage-before.log)"; fi
if ctr_verified outage-before; then pass "blob store: containerd fetched through the mirror, digests verified"
else fail "blob store: containerd fetch before the outage (see $LOGS/ctr-outage-before.log)"; fi
stored=$(find "$WORK/data/proxy-outage/blobs/blobs" -type f 2>/dev/null | wc -l)
if [[ $stored -eq 3 ]]; then pass "blob store: the mirror's store holds the image's 3 blobs"
else fail "blob store: the mirror's store holds $stored blobs"; fi

# ---------------------------------------------------------------- docker
docker_e2e

# ---------------------------------------------------------------- the outage, for skopeo and containerd
outage_stop
gets=$(outage_blob_gets)
ok=1
if skopeo_verified outage-during; then pass "outage: skopeo pulled the image from the mirror's store, digests verified"
else fail "outage: skopeo pull (see $LOGS/skopeo-outage-during.log)"; ok=0; fi
if ctr_verified outage-during; then pass "outage: containerd fetched the image from the mirror's store, digests verified"
else fail "outage: containerd fetch (see $LOGS/ctr-outage-during.log)"; ok=0; fi
if [[ $(outage_blob_gets) == "$gets" ]] && grep -q '"store":"hit"' "$LOGS/proxy-outage.log"; then
  pass "outage: no blob was asked upstream; the mirror's log says store=hit"
else fail "outage: $(( $(outage_blob_gets) - gets )) blob GETs went upstream"; ok=0; fi
if [[ $ok == 1 ]]; then echo "e2e blob-store-outage: PASS (skopeo, containerd, Docker: pulled with the registry and its storage stopped)"
else echo "e2e blob-store-outage: FAIL"; fi

echo "e2e: $PASSED passed, $FAILED failed in ${SECONDS}s"
[[ $FAILED -eq 0 ]]
