#!/usr/bin/env bash
# Checks that the library builds with every direct dependency at the floor its version
# requirement in Cargo.toml states ("1" → 1.0.0, "0.2" → 0.2.0, "1.5" → 1.5.0), with all
# features, so that the floors published on crates.io are true. Transitive dependencies stay
# at their newest versions (what `-Z direct-minimal-versions` would pick, on stable cargo).
#
# Why a copy of the crate: the package's [dev-dependencies] (hyper, axum, s3s, aws-*, ...)
# go through the same resolver as the library's own dependencies and require newer versions
# of them (hyper needs a newer `http`, for example), so `cargo update --precise <floor>` in
# the repository would be refused for reasons that do not concern the library's users. The
# script therefore copies Cargo.toml, src/ and the files the sources include into a
# temporary directory, strips [workspace], [dev-dependencies], [[bench]], [[example]] and
# [profile.*],
# generates a fresh Cargo.lock there and resolves the floors in it. The repository's own
# Cargo.lock is backed up and restored on exit all the same (nothing here should touch it).
#
# When the resolver refuses a floor because another dependency needs a newer version of
# that crate, the script says which and uses the lowest version the resolver accepts.
# Versions are listed from cargo's local index cache (filled by `cargo generate-lockfile`).
#
# usage: bash scripts/min-versions.sh
# needs: cargo, jq. Builds in "${CARGO_TARGET_DIR:-target}/min-versions".
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}/min-versions"
crate=tower-signed-redirect

work=$(mktemp -d)
lock_backup=$(mktemp)
cp Cargo.lock "$lock_backup"
cleanup() {
  if ! cmp -s "$lock_backup" "$root/Cargo.lock"; then
    echo "min-versions: restoring $root/Cargo.lock" >&2
    cp "$lock_backup" "$root/Cargo.lock"
  fi
  rm -rf "$work" "$lock_backup"
}
trap cleanup EXIT

# The library alone: no dev-dependencies, benches, examples or profiles.
cp -r Cargo.toml src "$work"/
for f in README.md SECURITY.md CHANGELOG.md LICENSE-MIT LICENSE-APACHE; do
  if [[ -e $f ]]; then cp "$f" "$work"/; fi
done
awk '
  /^\[/ { skip = ($0 ~ /^\[dev-dependencies\]/ || $0 ~ /^\[\[(bench|example)\]\]/ || $0 ~ /^\[profile[.\]]/ || $0 ~ /^\[workspace\]/) }
  !skip
' Cargo.toml >"$work/Cargo.toml"
cd "$work"
cargo generate-lockfile --quiet

# name<TAB>requirement of each normal (non-dev, non-build) dependency, optional ones included.
mapfile -t deps < <(cargo metadata --no-deps --format-version 1 |
  jq -r --arg c "$crate" '.packages[] | select(.name == $c) | .dependencies[]
    | select(.kind == null) | [.name, .req] | @tsv')

# "^1" → 1.0.0, "0.2" → 0.2.0, "~1.5" → 1.5.0, "=1.2.3" → 1.2.3
floor_of() {
  local req=${1%%,*}
  req=${req//[[:space:]]/}
  req=${req#^}; req=${req#=}; req=${req#~}; req=${req#>=}
  [[ $req =~ ^[0-9]+(\.[0-9]+){0,2}$ ]] || { echo "unsupported requirement: $1" >&2; return 1; }
  local IFS=.
  read -r major minor patch <<<"$req"
  echo "$major.${minor:-0}.${patch:-0}"
}

# The version of `name` that the crate's own dependency resolved to, as name@version.
locked_spec() {
  cargo metadata --format-version 1 --all-features 2>/dev/null |
    jq -r --arg c "$crate" --arg d "$1" '
      (.resolve.root) as $root
      | [.resolve.nodes[] | select(.id == $root) | .deps[] | select(.pkg | test("[#/]" + $d + "@"))][0].pkg as $id
      | .packages[] | select(.id == $id) | "\(.name)@\(.version)"'
}

# Non-yanked, non-pre-release versions of `name` that are semver-compatible with `floor` and
# not below it, lowest first, from cargo's index cache.
candidates() {
  local floor=$2 n=${1,,} prefix major minor
  case ${#n} in
    1) prefix=1/$n ;; 2) prefix=2/$n ;; 3) prefix=3/${n:0:1}/$n ;;
    *) prefix=${n:0:2}/${n:2:2}/$n ;;
  esac
  IFS=. read -r major minor _ <<<"$floor"
  local compat
  if ((major > 0)); then compat="$major."; elif ((minor > 0)); then compat="0.$minor."; else compat="$floor"; fi
  cat "${CARGO_HOME:-$HOME/.cargo}"/registry/index/*/.cache/"$prefix" 2>/dev/null |
    tr '\0' '\n' | grep '^{' | jq -r 'select(.yanked | not) | .vers' |
    grep -v -- - | sort -uV | awk -v c="$compat" 'index($0, c) == 1' |
    while read -r v; do
      if [[ $(printf '%s\n%s\n' "$floor" "$v" | sort -V | head -1) == "$floor" ]]; then echo "$v"; fi
    done
}

declare -A result
refused=()
# name version → 0 if the resolver took it; the reason for a refusal in $why.
why=""
try_precise() {
  local err
  if err=$(cargo update --quiet -p "$(locked_spec "$1")" --precise "$2" 2>&1); then
    return 0
  fi
  why=$(grep -m1 'does not have that feature' <<<"$err" ||
    grep -m1 -o 'required by package `[^`]*`' <<<"$err" ||
    grep -m1 '^error' <<<"$err" || true)
  return 1
}
resolved() { locked_spec "$1" | sed 's/.*@//'; }

echo "== direct dependencies at their floors (in a copy of the crate without dev-dependencies)"
for line in "${deps[@]}"; do
  IFS=$'\t' read -r name req <<<"$line"
  floor=$(floor_of "$req")
  if try_precise "$name" "$floor"; then
    result[$name]="$floor: ok"
  else
    result[$name]="$floor: refused ($why)"
    refused+=("$name")
  fi
done
# A floor refused because of another dependency may be accepted once that one is lowered
# too: retry the refused ones, each at its floor and else at the lowest version the resolver
# accepts, until nothing moves.
for round in 1 2 3 4; do
  moved=0
  for name in "${refused[@]}"; do
    req=$(printf '%s\n' "${deps[@]}" | awk -F'\t' -v n="$name" '$1 == n { print $2 }')
    floor=$(floor_of "$req")
    now=$(resolved "$name")
    [[ $now == "$floor" ]] && continue
    if try_precise "$name" "$floor"; then
      result[$name]="$floor: ok"
      moved=1
      continue
    fi
    for v in $(candidates "$name" "$floor"); do
      [[ $v == "$now" ]] && break
      [[ $v == "$floor" ]] && continue
      if try_precise "$name" "$v"; then
        moved=1
        break
      fi
    done
    result[$name]="$floor: refused ($why); lowest the resolver accepts: $(resolved "$name")"
  done
  ((moved)) || break
done

status=0
build_log=$(mktemp -p "$work")
if CARGO_TARGET_DIR="$target_dir" cargo check --quiet --lib --all-features -p "$crate" >"$build_log" 2>&1; then
  verdict=ok
else
  verdict=FAILED
  status=1
fi

for line in "${deps[@]}"; do
  IFS=$'\t' read -r name req <<<"$line"
  printf '%-17s %-9s resolved %-8s floor %s\n' "$name" "\"$req\"" "$(resolved "$name")" "${result[$name]}"
done
echo "== cargo check --lib --all-features with these versions: $verdict"
if ((status != 0)); then
  grep -E '^(error|warning: unused)' -A 12 "$build_log" | head -80
fi
exit $status
