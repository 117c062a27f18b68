#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (libFuzzer): each for a while on its committed seeds
# (fuzz/seeds/<target>) plus a scratch corpus (fuzz/corpus/<target>, not committed). A crash,
# a panic, an abort, a leak of more than -rss_limit_mb or one input running over 20 s fails
# the run; libFuzzer leaves the input in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh                    # every target, 30 s each (what the test command runs)
#   scripts/fuzz.sh 600                # every target, 10 minutes each
#   scripts/fuzz.sh 600 mqtt_request   # one target
#
# The build (the whole dependency tree again, with libFuzzer's coverage instrumentation: about 9
# minutes on 2 cores) goes to a target folder outside the clone, so that CI on the same machine
# rebuilds only what changed: $EDGEINFER_FUZZ_TARGET_DIR, default ~/.cache/edgeinfer/fuzz-target.
# It can be deleted at any time.
#
# Built with the stable toolchain and no sanitizer (the fuzzed code is safe Rust; libFuzzer's
# coverage instrumentation works on stable), in release mode with debug assertions and overflow
# checks on. ORT_DYLIB_PATH, when set, adds ONNX Runtime to the onnx_load target.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(mqtt_request dbus_options image_preprocess mask_encoding chat_template onnx_load)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz (crates.io)"
  cargo install --locked cargo-fuzz --version 0.13.2
fi
# The fuzzed code must be the shipped code: every package both lock files name must have the
# same versions in both (fuzz/Cargo.lock is the main one plus libfuzzer-sys and arbitrary).
python3 - <<'PY'
import re, sys
def versions(path):
    out = {}
    for name, version in re.findall(r'\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"', open(path).read()):
        out.setdefault(name, set()).add(version)
    return out
main, fuzz = versions("../Cargo.lock"), versions("Cargo.lock")
drift = [f"{n}: fuzz {sorted(v)} vs main {sorted(main[n])}" for n, v in fuzz.items() if n in main and not v <= main[n]]
if drift:
    sys.exit("fuzz/Cargo.lock has drifted from Cargo.lock (copy Cargo.lock over it, then cargo fuzz build):\n  " + "\n  ".join(drift))
PY
target_dir=${EDGEINFER_FUZZ_TARGET_DIR:-$HOME/.cache/edgeinfer/fuzz-target}
mkdir -p "$target_dir"
cargo fuzz build --sanitizer none --target-dir "$target_dir"
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "==> fuzz $t for ${seconds}s"
  log=$(mktemp)
  if ! cargo fuzz run --sanitizer none --target-dir "$target_dir" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo '?')
  summary+=("$(printf '%-18s %8ss %12s runs  coverage %s' "$t" "$seconds" "$runs" "$cov")")
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
