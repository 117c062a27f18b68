#!/usr/bin/env bash
# The README's test command: installs what the tests need on a Debian machine, then runs every
# test. Safe to re-run: installs are skipped when already present, pip reuses its wheel cache.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh -- parity  # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# --- Debian packages -----------------------------------------------------------------------
need_pkgs=()
command -v python3 >/dev/null || need_pkgs+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
if ((${#need_pkgs[@]})); then
  log "installing Debian packages: ${need_pkgs[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_pkgs[@]}"
fi

# --- ONNX Runtime, the way users get it: the PyPI wheel in a project-local venv --------------
source scripts/ort-env.sh
ort_venv "$root/.venv" "onnxruntime==1.32.0"
export ORT_DYLIB_PATH="$ORT_LIB"
log "ONNX Runtime: $ORT_DYLIB_PATH"

# --- Tests ---------------------------------------------------------------------------------
log "cargo test"
cargo test --workspace --locked "$@"
