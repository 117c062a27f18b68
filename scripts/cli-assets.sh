#!/usr/bin/env bash
# Shell completions and man pages of edgeinfer and edgeinferd, generated from their clap
# definitions by the built `edgeinfer` (`edgeinfer completions SHELL`, `edgeinfer manpages DIR`)
# into daemon/assets/: completions/{edgeinfer.bash,_edgeinfer,edgeinfer.fish} and man/*.1. They
# are committed because the packages install them: a cross-built binary cannot run on the build
# host of a Yocto image, and `cargo deb` has no pre-packaging step.
#
#   scripts/cli-assets.sh           # regenerate daemon/assets/
#   scripts/cli-assets.sh --check   # exit 1 when daemon/assets/ differs (the test command runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${EDGEINFER_BIN:-target/debug/edgeinfer}
[ -x "$bin" ] || cargo build --locked -q -p edgeinfer-daemon --bin edgeinfer
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/completions" "$tmp/man"
"$bin" completions bash >"$tmp/completions/edgeinfer.bash"
"$bin" completions zsh >"$tmp/completions/_edgeinfer"
"$bin" completions fish >"$tmp/completions/edgeinfer.fish"
"$bin" manpages "$tmp/man"
n=$(find "$tmp" -type f | wc -l)
if [ "${1:-}" = "--check" ]; then
  if ! diff -r daemon/assets "$tmp" >/dev/null 2>&1; then
    diff -ru daemon/assets "$tmp" | head -40 || true
    echo "error: daemon/assets/ is out of date with the CLI: run scripts/cli-assets.sh" >&2
    exit 1
  fi
  echo "cli-assets: $n completion and man page files in step with the CLI"
  exit 0
fi
rm -rf daemon/assets
mkdir -p daemon/assets
cp -r "$tmp/completions" "$tmp/man" daemon/assets/
echo "wrote daemon/assets/ ($n files)"
