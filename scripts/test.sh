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
command -v mosquitto >/dev/null || need_pkgs+=(mosquitto)                  # MQTT broker for the daemon tests
command -v mosquitto_pub >/dev/null || need_pkgs+=(mosquitto-clients)      # third-party MQTT clients
command -v dbus-daemon >/dev/null || need_pkgs+=(dbus-daemon)              # private buses for the D-Bus tests
command -v busctl >/dev/null || need_pkgs+=(systemd)                       # busctl: a D-Bus client we did not write
[ -x /lib/systemd/systemd-journald ] && command -v journalctl >/dev/null \
  || need_pkgs+=(systemd)                                                  # a real journald for the log test
command -v gdbus >/dev/null || need_pkgs+=(libglib2.0-bin)                 # gdbus: another one
command -v setpriv >/dev/null || need_pkgs+=(util-linux)                   # calling as another user (policy test)
command -v sha256sum >/dev/null || need_pkgs+=(coreutils)
command -v dpkg-deb >/dev/null || need_pkgs+=(dpkg)                        # inspecting the .deb
command -v promtool >/dev/null || need_pkgs+=(prometheus)                  # promtool: checks our metrics text
if ((${#need_pkgs[@]})); then
  log "installing Debian packages: ${need_pkgs[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
  # The package starts a system broker on port 1883; the tests run their own on free ports.
  if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
    $sudo_cmd systemctl stop mosquitto || true
  fi
fi

# --- ONNX Runtime, the way users get it: PyPI wheels in project-local venvs ------------------
# The newest runtime is the default for every test; the others are loaded by the execution-
# provider tests in their own processes. pip keeps the wheels in its cache between runs.
source scripts/ort-env.sh
ort_venv "$root/.venv" "onnxruntime==1.32.0"
export ORT_DYLIB_PATH="$ORT_LIB"
ort_venv "$root/.venv-openvino" "onnxruntime-openvino==1.24.1"   # OpenVINO EP (CPU device)
export EDGEINFER_TEST_ORT_OPENVINO="$ORT_LIB"
ort_venv "$root/.venv-gpu" "onnxruntime-gpu==1.31.1"             # CUDA/TensorRT EPs, no driver here
export EDGEINFER_TEST_ORT_GPU="$ORT_LIB"
ort_venv "$root/.venv-ort-floor" "onnxruntime==1.20.1"           # oldest supported (API level 20)
export EDGEINFER_TEST_ORT_FLOOR="$ORT_LIB"
ort_venv "$root/.venv-ort-old" "onnxruntime==1.19.2"             # too old: must be refused
export EDGEINFER_TEST_ORT_OLD="$ORT_LIB"
log "ONNX Runtime: $ORT_DYLIB_PATH (+ openvino, gpu, 1.20.1, 1.19.2 builds for the EP tests)"

# huggingface_hub, the independent party of the `edgeinfer pull` tests: it reads the cache pull
# writes and writes a cache hf: paths read (daemon/tests/pull.rs).
[ -x "$root/.venv-hub/bin/python" ] || python3 -m venv "$root/.venv-hub"
"$root/.venv-hub/bin/python" -c 'import sys, huggingface_hub; sys.exit(huggingface_hub.__version__ != "2.4.0")' 2>/dev/null \
  || "$root/.venv-hub/bin/python" -m pip install -q --disable-pip-version-check "huggingface_hub==2.4.0"
export EDGEINFER_TEST_HUB_PYTHON="$root/.venv-hub/bin/python"

# --- Tests ---------------------------------------------------------------------------------
if [ $# -eq 0 ]; then
  # The optional builds must keep compiling: tract only (no ONNX Runtime code at all), and the
  # ort backend at API level 17 for older device runtimes.
  log "cargo check: feature sets"
  cargo check --locked -p edgeinfer-daemon --no-default-features --features tract
  cargo check --locked -p edgeinfer-daemon --no-default-features --features ort-legacy,ep-all
fi
log "cargo test"
cargo test --workspace --locked "$@"

if [ $# -eq 0 ]; then
  # Everything a client, a bus peer or a model file hands the daemon, under libFuzzer: 30 s per
  # target on the committed seeds (scripts/fuzz.sh 600 for the 10-minute runs).
  log "fuzz: cargo-fuzz targets, 30 s each"
  scripts/fuzz.sh 30
fi

if [ $# -eq 0 ]; then
  # Deployment paths that can be checked without bitbake or a booted systemd (the unit file itself
  # is checked by daemon/tests/deployment.rs through systemd/check-unit.sh).
  log "deployment: Yocto layer (structure, crate list, oelint-adv)"
  [ -x "$root/.venv-tools/bin/oelint-adv" ] || {
    python3 -m venv "$root/.venv-tools"
    "$root/.venv-tools/bin/python" -m pip install -q --disable-pip-version-check "oelint-adv==9.11.2"
  }
  yocto/check-layer.sh "$root/.venv-tools/bin/oelint-adv"
  log "deployment: shell completions and man pages in step with the CLI"
  scripts/cli-assets.sh --check
  log "deployment: Debian package (cargo-deb, dpkg-deb)"
  scripts/check-deb.sh
fi
