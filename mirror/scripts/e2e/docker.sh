# shellcheck shell=bash
# Docker itself through the mirror; sourced by run.sh, whose helpers (start, stop, log, pass,
# fail, wait_http) and variables (WORK, LOGS, MIRROR, MANIFEST, USER_PASS, PIDS) it uses.
#
# Debian's docker.io (dockerd 20.10) as root, with everything of its own under
# $WORK/docker/<case>: socket, daemon.json, data root, exec root, pidfile, and the containerd
# that dockerd starts itself under its exec root. Never the machine's own Docker: the CLI is
# always given `-H unix://<our socket>` and a private `--config`, and dockerd is not started
# when /run/containerd/containerd.sock exists (dockerd 20.10 would silently use that system
# containerd instead of starting its own). After each case, dockerd gets SIGTERM and is
# waited for; whatever it left mounted under its state dir is unmounted, the dir removed,
# and /etc/docker/key.json (which 20.10 always writes) removed if this suite created it.
#
# All traffic stays on 127.0.0.1: dockerd always falls back to registry-1.docker.io when the
# mirror fails (20.10 has no option against it), so its HTTP(S)_PROXY is a closed loopback
# port (127.0.0.1:9): such a fallback fails at once, with no DNS query and no packet leaving
# the machine, while the mirror on 127.0.0.1 is reached directly (NO_PROXY).
#
# The image is pulled as a Docker Hub name, `e2e/image:v1`: the mirror's default upstream is
# named docker.io but points at one of the suite's registries. (Two components: a
# one-component name would get `library/` from the mirror, as Docker Hub's do.)
#   docker-anonymous: the client sends no credentials; the mirror logs in to the https
#     registry (:5012, its own CA, storage on http) with its own account.
#   docker-htpasswd: the mirror requires a login (--htpasswd) and logs in to the s3rver
#     registry (:5011) with its own account; a pull without credentials must fail with the
#     mirror's 401, then `docker login` to the mirror, and the pull must go through.

DOCKER_STATE="$WORK/docker"
DOCKERD=(dockerd)
DOCKER_CLI=docker
DOCKER_KEY=/etc/docker/key.json
DOCKER_KEY_EXISTED=""
DOCKER_RUN_EXISTED=""
DOCKER_ETC_EXISTED=""
# A closed port on loopback: dockerd's fallback to Docker Hub goes nowhere.
DOCKER_NO_NET=(HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 "NO_PROXY=127.0.0.1,localhost"
  https_proxy=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 "no_proxy=127.0.0.1,localhost")

forget_pid() { # pid: a process stopped here is not signalled again by cleanup
  local kept=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

stop_forget() { # name: run.sh's stop, then forget the PID
  local var="PID_${1//-/_}"
  stop "$1"
  forget_pid "${!var}"
}

DOCKER_UNMOUNTED=0
docker_unmount() { # dir: unmount everything under it, deepest first; counts in DOCKER_UNMOUNTED
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    DOCKER_UNMOUNTED=$((DOCKER_UNMOUNTED + 1))
  done < <(awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
}

cmdline_of() { # pid: its command line, empty when it is gone
  tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true
}

docker_leftovers() { # processes whose command line names our state dir (read only)
  local f pid cmd
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}; pid=${pid%/cmdline}
    cmd=$(cmdline_of "$pid")
    if [[ $cmd == *"$DOCKER_STATE/"* ]]; then echo "$pid"; fi
  done
}

# Called from run.sh's cleanup, after every started PID got SIGTERM and was waited for, and
# at the end of the section: nothing of dockerd's stays behind.
docker_cleanup() {
  [[ -n $DOCKER_KEY_EXISTED ]] || return 0 # the section never started
  local f pid
  # dockerd's own containerd exits with dockerd (even on SIGKILL); should one still run, by
  # the pidfile it wrote under our exec root.
  for f in "$DOCKER_STATE"/*/exec/containerd/containerd.pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f")
    if [[ $pid =~ ^[0-9]+$ && $(cmdline_of "$pid") == *"$DOCKER_STATE/"* ]]; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  if [[ -d $DOCKER_STATE ]]; then
    docker_unmount "$DOCKER_STATE"
    rm -rf "$DOCKER_STATE"
  fi
  if [[ $DOCKER_KEY_EXISTED == no ]]; then rm -f "$DOCKER_KEY"; fi
  if [[ $DOCKER_ETC_EXISTED == no ]]; then rmdir /etc/docker 2>/dev/null || true; fi
  # dockerd creates /run/docker/plugins even with another exec root; only empty dirs go.
  if [[ $DOCKER_RUN_EXISTED == no ]]; then rmdir /run/docker/plugins /run/docker 2>/dev/null || true; fi
}

dk() { # docker CLI against the current case's dockerd only
  "$DOCKER_CLI" --config "$DK_DIR/cfg" -H "unix://$DK_DIR/docker.sock" "$@"
}

# dockerd_up CASE MIRROR_PORT NAME: dockerd_start; when it fails, case NAME fails with the
# reason, what was started for it (dockerd, the proxy) is stopped, and it returns 1.
dockerd_up() {
  local case=$1 port=$2 name=$3 var="PID_dockerd_${1//-/_}"
  dockerd_start "$case" "$port" && return 0
  fail "docker: dockerd could not start for $name, so it was not tested: $DOCKERD_REASON"
  echo "e2e $name: FAIL (dockerd did not start: ${DOCKERD_REASON:0:200})"
  [[ -n ${!var:-} ]] && dockerd_stop "$case"
  stop_forget "proxy-$name"
  docker_cleanup
  return 1
}

# dockerd_start CASE MIRROR_PORT: sets DK_DIR, DK_LOG; on failure returns 1 with the reason
# (from dockerd's log) in DOCKERD_REASON.
dockerd_start() {
  local name=$1 port=$2
  DK_DIR="$DOCKER_STATE/$name"
  DK_LOG="$LOGS/dockerd-$name.log"
  DOCKERD_REASON=""
  mkdir -p "$DK_DIR/cfg"
  echo '{}' >"$DK_DIR/daemon.json" # not /etc/docker/daemon.json
  if [[ -e /run/containerd/containerd.sock ]]; then
    DOCKERD_REASON="/run/containerd/containerd.sock exists: dockerd 20.10 would use that containerd (the machine's) instead of its own, so it was not started"
    return 1
  fi
  start "dockerd-$name" env "${DOCKER_NO_NET[@]}" "${DOCKERD[@]}" \
    --host "unix://$DK_DIR/docker.sock" --config-file "$DK_DIR/daemon.json" \
    --data-root "$DK_DIR/data" --exec-root "$DK_DIR/exec" --pidfile "$DK_DIR/docker.pid" \
    --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --storage-driver=vfs \
    --registry-mirror "http://127.0.0.1:$port" --insecure-registry "127.0.0.1:$port"
  local var="PID_dockerd_${name//-/_}" ready=0
  for _ in $(seq 1 300); do
    if dk info >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "${!var}" 2>/dev/null || break
    sleep 0.1
  done
  if [[ $ready == 0 ]]; then
    local why
    why=$(grep -E 'failed to start daemon|level=fatal|root privileges|[Pp]ermission denied|[Oo]peration not permitted|cgroup' "$DK_LOG" | tail -n 1)
    [[ -n $why ]] || why=$(grep -v '^[[:space:]]*$' "$DK_LOG" | tail -n 1)
    if kill -0 "${!var}" 2>/dev/null; then
      DOCKERD_REASON="no answer on its socket within 30 s; its log ends: ${why:0:300}"
    else
      wait "${!var}" 2>/dev/null
      DOCKERD_REASON="it exited (status $?): ${why:-its log is empty}"
      DOCKERD_REASON=${DOCKERD_REASON:0:400}
    fi
    return 1
  fi
  if ! grep -q 'libcontainerd: started new containerd process' "$DK_LOG"; then
    DOCKERD_REASON="dockerd did not start a containerd of its own (its log does not say so): it may be using another one"
    return 1
  fi
  return 0
}

dockerd_stop() { # CASE: SIGTERM, wait, unmount (counted in DOCKER_UNMOUNTED), remove its state
  local name=$1 var="PID_dockerd_${1//-/_}" dir="$DOCKER_STATE/$1" pid cpid
  pid=${!var}
  cpid=$(cat "$dir/exec/containerd/containerd.pid" 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "dockerd-$name did not stop within 30 s of SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
  if [[ $cpid =~ ^[0-9]+$ ]]; then
    for _ in $(seq 1 50); do
      [[ $(cmdline_of "$cpid") == *"$dir/"* ]] || break
      sleep 0.1
    done
  fi
  docker_unmount "$dir"
  rm -rf "$dir"
}

# What the mirror logged since line FROM: its JSON request lines.
upstream_manifest_gets() { # mirror port: manifest GETs the mirror has sent its upstream
  curl -s --max-time 5 "http://127.0.0.1:$1/metrics" \
    | sed -n 's/^registry_mirror_upstream_requests_total{method="GET",route="manifest"} \([0-9]*\)$/\1/p' \
    | head -n 1 | grep . || echo 0
}

mirror_lines_since() { # log, from (a line count)
  tail -n "+$(($2 + 1))" "$1" | grep '"message":"request"' || true
}

docker_expect() { # sets WANT_MANIFEST, WANT_CONFIG, WANT_DIFFS from the generated image
  WANT_MANIFEST="sha256:$(sha256sum "$MANIFEST" | cut -d' ' -f1)"
  read -r WANT_CONFIG WANT_DIFFS < <(python3 - "$MANIFEST" <<'PY'
import json, os, sys
m = json.load(open(sys.argv[1]))
c = m["config"]["digest"]
conf = json.load(open(os.path.join(os.path.dirname(sys.argv[1]), c.split(":", 1)[1])))
print(c, ",".join(conf["rootfs"]["diff_ids"]))
PY
  )
}

# docker_check_image CASE: the pulled image is the generated one: its ID is the config's
# digest, its RepoDigests name the manifest's digest, its layers' diff IDs are the config's.
docker_check_image() {
  local id repo layers
  id=$(dk image inspect --format '{{.Id}}' e2e/image:v1 2>&1)
  repo=$(dk image inspect --format '{{join .RepoDigests " "}}' e2e/image:v1 2>&1)
  layers=$(dk image inspect --format '{{join .RootFS.Layers ","}}' e2e/image:v1 2>&1)
  if [[ $id == "$WANT_CONFIG" && " $repo " == *" e2e/image@$WANT_MANIFEST "* && $layers == "$WANT_DIFFS" ]]; then
    return 0
  fi
  CHECK_WHY="image ID $id (want $WANT_CONFIG), RepoDigests '$repo' (want e2e/image@$WANT_MANIFEST), layers $layers (want $WANT_DIFFS)"
  return 1
}

docker_pull() { # CASE TAG: docker pull e2e/image:v1, output in $LOGS/docker-pull-CASE-TAG.log
  timeout 300 "$DOCKER_CLI" --config "$DK_DIR/cfg" -H "unix://$DK_DIR/docker.sock" pull e2e/image:v1 \
    >"$LOGS/docker-pull-$1-$2.log" 2>&1
}

pull_error() { # CASE TAG: why a pull failed, from the CLI and dockerd (the mirror's error)
  local cli mirror
  cli=$(tail -n 1 "$LOGS/docker-pull-$1-$2.log")
  # The mirror's error, not that of the fallback to Docker Hub which follows it.
  mirror=$(grep 'Attempting next endpoint' "$DK_LOG" | grep -v 'registry-1.docker.io' | tail -n 1 | sed 's/.*after error: //; s/"$//; s/\\"//g')
  echo "${cli:0:300}${mirror:+ (dockerd: ${mirror:0:300})}"
}

# ---------------------------------------------------------------- the section
docker_e2e() {
  local t0=$SECONDS
  log "docker: Debian's dockerd (its own socket, roots and containerd under $DOCKER_STATE), docker pull through the mirror"
  if [[ -e $DOCKER_KEY ]]; then DOCKER_KEY_EXISTED=yes; else DOCKER_KEY_EXISTED=no; fi
  if [[ -e /run/docker ]]; then DOCKER_RUN_EXISTED=yes; else DOCKER_RUN_EXISTED=no; fi
  if [[ -e /etc/docker ]]; then DOCKER_ETC_EXISTED=yes; else DOCKER_ETC_EXISTED=no; fi
  # The CLI of the same package as dockerd (20.10, API 1.41); any newer one negotiates down.
  if [[ -x /usr/bin/docker ]]; then DOCKER_CLI=/usr/bin/docker; fi
  if ! command -v dockerd >/dev/null || ! command -v "$DOCKER_CLI" >/dev/null; then
    fail "docker: dockerd or the docker CLI is not installed (apt-get install docker.io)"
    echo "e2e docker: FAIL (not installed)"
    return
  fi
  log "docker: $("${DOCKERD[@]}" --version 2>&1), CLI $("$DOCKER_CLI" --version 2>&1)"
  mkdir -p "$DOCKER_STATE"
  docker_expect
  local pw=${USER_PASS#*:} ok mark lines

  # ------------------------------------------------ anonymous client, the mirror's own login
  local name=docker-anonymous port=5400 mlog="$LOGS/proxy-docker-anonymous.log"
  ok=1
  start "proxy-$name" "$MIRROR" --data-dir "$WORK/data/proxy-$name" --listen "127.0.0.1:$port" \
    --upstream "docker.io=https://127.0.0.1:5012" --upstream-ca "$WORK/ca.crt" --allow-http-storage \
    --storage-host 127.0.0.1:9000 --log-format json \
    --upstream-user "${USER_PASS%%:*}" --upstream-password "$pw"
  wait_http "http://127.0.0.1:$port/v2/"
  dockerd_up anonymous "$port" "$name" || return
  pass "docker: dockerd $(dk version --format '{{.Server.Version}}' 2>/dev/null) answers on its own socket, with a containerd of its own"
  mark=$(wc -l <"$mlog")
  if docker_pull anonymous first; then
    sleep 0.3 # the mirror writes a request's line when its body is dropped
    lines=$(mirror_lines_since "$mlog" "$mark")
    local head_tag get_digest followed bad fallback
    head_tag=$(grep '"method":"HEAD"' <<<"$lines" | grep -c '"path":"/v2/e2e/image/manifests/v1"' || true)
    get_digest=$(grep '"method":"GET"' <<<"$lines" | grep -c "\"path\":\"/v2/e2e/image/manifests/$WANT_MANIFEST\"" || true)
    followed=$(grep '"method":"GET"' <<<"$lines" | grep '/blobs/' | grep -c '"redirect":"followed"' || true)
    bad=$(grep -vc '"status":200' <<<"$lines" || true)
    fallback=$(grep -c 'Attempting next endpoint' "$DK_LOG" || true)
    if docker_check_image; then
      pass "$name: docker pull e2e/image:v1 (a Docker Hub name): image ID, manifest digest and the 2 layers' diff IDs are the generated image's"
    else
      fail "$name: pulled image differs: $CHECK_WHY"; ok=0
    fi
    if [[ $head_tag -ge 1 && $get_digest -ge 1 && $followed -ge 3 && $bad == 0 && $fallback == 0 ]]; then
      pass "$name: through the mirror: HEAD manifest by tag, GET by digest, $followed blob GETs with followed redirects, all 200, no fallback to Docker Hub"
    else
      fail "$name: mirror log: $head_tag HEAD by tag, $get_digest GET by digest, $followed followed blob GETs, $bad non-200; dockerd fell back $fallback times"; ok=0
    fi
    # Again after `docker rmi`: the manifest cache answers (by digest from the cache, by tag
    # after a free HEAD), so no manifest GET goes upstream.
    if dk rmi e2e/image:v1 >"$LOGS/docker-rmi-anonymous.log" 2>&1; then
      mark=$(wc -l <"$mlog")
      gets_before=$(upstream_manifest_gets "$port")
      if docker_pull anonymous second; then
        sleep 0.3
        lines=$(mirror_lines_since "$mlog" "$mark")
        local gets heads blobs hits
        gets=$(( $(upstream_manifest_gets "$port") - gets_before ))
        heads=$(grep '"method":"HEAD"' <<<"$lines" | grep -c '"path":"/v2/[^"]*/manifests/' || true)
        blobs=$(grep -c '"path":"/v2/[^"]*/blobs/' <<<"$lines" || true)
        hits=$(grep '"path":"/v2/[^"]*/blobs/' <<<"$lines" | grep -c '"cache":"hit"' || true)
        log "info: $name: second pull after docker rmi: $gets manifest GET(s) upstream, $heads manifest HEAD(s) from docker; $blobs blob GET(s), $hits of them straight to storage from the redirect cache"
        if [[ $gets -eq 0 ]]; then
          pass "$name: second pull after docker rmi sent no manifest GET upstream (the manifest cache)"
        else
          fail "$name: second pull after docker rmi sent $gets manifest GET(s) upstream"; ok=0
        fi
        if docker_check_image; then
          pass "$name: second pull after docker rmi: same image, digests verified"
        else
          fail "$name: second pull: $CHECK_WHY"; ok=0
        fi
      else
        fail "$name: second pull after docker rmi: $(pull_error anonymous second)"; ok=0
      fi
    else
      fail "$name: docker rmi: $(tail -n 1 "$LOGS/docker-rmi-anonymous.log")"; ok=0
    fi
  else
    fail "$name: docker pull e2e/image:v1: $(pull_error anonymous first)"; ok=0
  fi
  if grep -qF -- "$pw" "$mlog"; then fail "$name: the mirror's password is in its log"; ok=0; fi
  dockerd_stop anonymous
  stop_forget "proxy-$name"
  if [[ $ok == 1 ]]; then echo "e2e $name: PASS (docker pull via --registry-mirror, digests, HEAD/GET manifest, 3 blobs followed; rmi + pull again)"
  else echo "e2e $name: FAIL"; fi

  # ------------------------------------------------ docker login to an --htpasswd mirror
  # A second dockerd with a fresh data root (a daemon has one --registry-mirror set), so
  # the pull is a first one: HEAD by tag, GET by digest, every blob.
  name=docker-htpasswd port=5401 mlog="$LOGS/proxy-docker-htpasswd.log"
  ok=1
  local client_user=docker-client client_pw=docker-client-password
  htpasswd -Bbn "$client_user" "$client_pw" >"$WORK/htpasswd-docker"
  start "proxy-$name" "$MIRROR" --data-dir "$WORK/data/proxy-$name" --listen "127.0.0.1:$port" \
    --upstream "docker.io=http://127.0.0.1:5011" --storage-host 127.0.0.1:9001 --log-format json \
    --upstream-user "${USER_PASS%%:*}" --upstream-password "$pw" --htpasswd "$WORK/htpasswd-docker"
  wait_http "http://127.0.0.1:$port/v2/"
  dockerd_up htpasswd "$port" "$name" || return
  # Without credentials: the mirror answers 401, dockerd falls back to Docker Hub, which
  # fails at the closed proxy port; the pull must fail.
  local code
  code=$(curl -s -o /dev/null --max-time 30 -w '%{http_code}' "http://127.0.0.1:$port/v2/e2e/image/manifests/v1")
  if docker_pull htpasswd anonymous; then
    fail "$name: a pull without credentials succeeded through an --htpasswd mirror"; ok=0
  elif [[ $code == 401 ]] && grep 'Attempting next endpoint' "$DK_LOG" | grep -q "127.0.0.1:$port"; then
    # dockerd's error for the mirror (then it tried Docker Hub, which the closed proxy stops).
    pass "$name: without credentials the pull fails: the mirror answers 401 (dockerd: $(grep 'Attempting next endpoint' "$DK_LOG" | grep "127.0.0.1:$port" | tail -n 1 | sed 's/.*after error: //; s/"$//; s/\\"//g' | cut -c1-150))"
  else
    fail "$name: the pull without credentials failed, but not with the mirror's 401 (curl: $code): $(pull_error htpasswd anonymous)"; ok=0
  fi
  # Credentials: `docker login` to the mirror itself (which checks them against the mirror's
  # htpasswd: GET /v2/ with Basic), then the entry copied to Docker Hub's key. Docker sends
  # credentials to a mirror only when they are stored for the image's registry
  # (`https://index.docker.io/v1/`), never for the mirror's host; and a `docker login` with
  # no server would talk to Docker Hub. Logging in to the mirror first (rather than writing
  # the file by hand) also tests that the CLI's own login works against the mirror.
  if printf '%s' "$client_pw" | dk login "127.0.0.1:$port" -u "$client_user" --password-stdin \
      >"$LOGS/docker-login.log" 2>&1; then
    python3 - "$DK_DIR/cfg/config.json" "127.0.0.1:$port" <<'PY'
import json, sys
path, host = sys.argv[1], sys.argv[2]
cfg = json.load(open(path))
cfg["auths"]["https://index.docker.io/v1/"] = cfg["auths"][host]
json.dump(cfg, open(path, "w"))
PY
    pass "$name: docker login 127.0.0.1:$port: $(tail -n 1 "$LOGS/docker-login.log"); stored for https://index.docker.io/v1/ too"
    mark=$(wc -l <"$mlog")
    if docker_pull htpasswd login; then
      sleep 0.3
      lines=$(mirror_lines_since "$mlog" "$mark")
      followed=$(grep '"method":"GET"' <<<"$lines" | grep '/blobs/' | grep -c '"redirect":"followed"' || true)
      get_digest=$(grep '"method":"GET"' <<<"$lines" | grep -c "\"path\":\"/v2/e2e/image/manifests/$WANT_MANIFEST\"" || true)
      if docker_check_image; then
        pass "$name: docker pull with the login: image ID, manifest digest and diff IDs are the generated image's"
      else
        fail "$name: pulled image differs: $CHECK_WHY"; ok=0
      fi
      if [[ $get_digest -ge 1 && $followed -ge 3 ]]; then
        pass "$name: through the mirror: GET manifest by digest, $followed blob GETs with followed redirects (s3rver)"
      else
        fail "$name: mirror log: $get_digest GET by digest, $followed followed blob GETs"; ok=0
      fi
    else
      fail "$name: docker pull with the login: $(pull_error htpasswd login)"; ok=0
    fi
  else
    fail "$name: docker login to the mirror: $(tail -n 1 "$LOGS/docker-login.log")"; ok=0
  fi
  if grep -qF -e "$pw" -e "$client_pw" "$mlog"; then fail "$name: a password is in the mirror's log"; ok=0; fi
  dockerd_stop htpasswd
  stop_forget "proxy-$name"
  if [[ $ok == 1 ]]; then echo "e2e $name: PASS (401 without a login; docker login, pull, digests, 3 blobs followed)"
  else echo "e2e $name: FAIL"; fi

  # ------------------------------------------------ the blob store through an outage
  # A third dockerd, on run.sh's outage mirror (its own login, its blob store): a pull; then
  # the registry and its storage stop, the mirror restarts on its store, and after `docker
  # rmi` the same image pulls again, no blob asked upstream.
  name=docker-outage port=$OUTAGE_PORT
  ok=1
  dockerd_up outage "$port" "$name" || return
  if docker_pull outage before && docker_check_image; then
    pass "$name: docker pull through a mirror that keeps what it serves: the generated image"
  else
    fail "$name: pull before the outage: $(pull_error outage before) ${CHECK_WHY:-}"; ok=0
  fi
  outage_stop
  local blob_gets
  blob_gets=$(outage_blob_gets)
  if dk rmi e2e/image:v1 >"$LOGS/docker-rmi-outage.log" 2>&1 && docker_pull outage during; then
    if docker_check_image; then
      pass "$name: with the registry and its storage stopped, docker pull again: image ID, manifest digest and diff IDs are the generated image's"
    else
      fail "$name: pulled during the outage, but: $CHECK_WHY"; ok=0
    fi
    if [[ $(outage_blob_gets) == "$blob_gets" ]]; then pass "$name: no blob asked upstream during the outage"
    else fail "$name: $(( $(outage_blob_gets) - blob_gets )) blob GETs went upstream during the outage"; ok=0; fi
  else
    fail "$name: pull during the outage: $(pull_error outage during)"; ok=0
  fi
  dockerd_stop outage
  if [[ $ok == 1 ]]; then echo "e2e $name: PASS (docker pull, then again with the registry and its storage stopped)"
  else echo "e2e $name: FAIL"; fi

  # ------------------------------------------------ nothing left
  docker_cleanup
  local left key=""
  left=$(docker_leftovers | tr '\n' ' ')
  if [[ $DOCKER_KEY_EXISTED == no && -e $DOCKER_KEY ]]; then key="$DOCKER_KEY is still there"; fi
  if [[ -z $left && -z $key && ! -e $DOCKER_STATE ]] && ! grep -qF -- "$DOCKER_STATE/" /proc/mounts; then
    pass "docker: every dockerd (and its containerd) stopped, no mounts left ($DOCKER_UNMOUNTED undone), state removed$([[ $DOCKER_KEY_EXISTED == no ]] && echo ", $DOCKER_KEY removed")"
  else
    fail "docker: left behind: processes ${left:-none}; ${key:-}; state dir $([[ -e $DOCKER_STATE ]] && echo present || echo gone)"
  fi
  log "docker section: $((SECONDS - t0))s"
}
