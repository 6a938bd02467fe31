#!/usr/bin/env bash
# Checks that the library builds with its declared minimum Rust version (Cargo.toml's
# `rust-version`), with a real rustc of that version: Debian 12 ships Rust 1.85 as
# `rustc-web`. The packages are unpacked into target/msrv (nothing is installed
# system-wide) and that rustc is driven by the project's cargo.
#
# usage: bash scripts/msrv.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WANT=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
DIR="$ROOT/target/msrv"
RUSTC="$DIR/rustc"
if [[ ! -x $RUSTC ]] || ! "$RUSTC" --version | grep -q "^rustc $WANT"; then
  rm -rf "$DIR" && mkdir -p "$DIR/debs"
  # Pinned to the $WANT build: bookworm-security also carries newer rustc-web releases.
  VERSION=$(apt-cache madison rustc-web | awk -v w="$WANT" '$3 ~ "^"w"[.]" {print $3; exit}')
  if [[ -z $VERSION ]]; then
    apt-get update -qq
    VERSION=$(apt-cache madison rustc-web | awk -v w="$WANT" '$3 ~ "^"w"[.]" {print $3; exit}')
  fi
  [[ -n $VERSION ]] || { echo "msrv: no rustc-web $WANT in the apt sources" >&2; exit 1; }
  (cd "$DIR/debs" && apt-get download -q "rustc-web=$VERSION" "libstd-rust-web-dev=$VERSION" \
    "libstd-rust-web-$WANT=$VERSION" libllvm19 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
  for deb in "$DIR"/debs/*.deb; do dpkg -x "$deb" "$DIR/root"; done
  cat > "$RUSTC" <<SH
#!/bin/sh
LD_LIBRARY_PATH="$DIR/root/usr/lib/x86_64-linux-gnu" exec "$DIR/root/usr/bin/rustc" "\$@"
SH
  chmod +x "$RUSTC"
fi
GOT=$("$RUSTC" --version)
[[ $GOT == "rustc $WANT"* ]] || { echo "msrv: wanted rustc $WANT, got $GOT" >&2; exit 1; }
cd "$ROOT"
RUSTC="$RUSTC" cargo check --quiet --lib --all-features --target-dir "$DIR/target"
echo "msrv: the library builds with $GOT (all features)"
