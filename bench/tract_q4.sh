#!/usr/bin/env bash
# LLaMA-135M decode on tract, on this CPU: the fp32 graph against its q4 variant (MatMulNBits,
# accuracy level 4, written by models/export/quantize.py) through each 4-bit kernel in the same
# binary, in fresh processes, the order rotated every round:
#   fp32         model.onnx
#   q4 tract     tract's own Q4_0 kernel (EDGEINFER_TRACT_Q4_KERNEL=tract: the weight repacked)
#   q4 f32       onnx/src/tract_q4_matmul.rs in float32 (EDGEINFER_TRACT_Q4_KERNEL=f32)
#   q4 int8      onnx/src/tract_q4_int8.rs, the activations in int8 as ONNX Runtime does
#                (EDGEINFER_TRACT_Q4_KERNEL=ours; the default for this level-4 graph on AVX2 and
#                AVX-512, see tract_q4_matmul::serves)
# The table gives medians and speed relative to fp32 and to tract's kernel. The CPU's vector
# extensions are printed first: the kernels take AVX-512 (F, VNNI) or AVX2 and FMA.
#
#   bench/tract_q4.sh [--rounds N] [--threads N] [--contexts 16,256] [--runs N] [--attention gqa|plain]
# Needs the export environment for the model (EXPORT_PYTHON, see bench/common.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=3; threads=$(nproc); contexts=16,256; runs=5; attention=gqa
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2;; --threads) threads=$2; shift 2;; --contexts) contexts=$2; shift 2;;
    --runs) runs=$2; shift 2;; --attention) attention=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
out=$root/bench/out
source bench/common.sh
model=$out/llama-135m; [ "$attention" = gqa ] && model=$out/llama-135m-gqa
bench_llama_135m "$model" "$attention"
grep -q accuracy_level "$model/model_q4.onnx" 2>/dev/null \
  || bench_export quantize.py --family llama --dir "$model" --variants q4 --no-goldens --accuracy-level 4
cargo build --release --locked -q -p edgeinfer-tests --example llama_decode

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); vector extensions:" \
  "$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_vnni|avx512vnni|avx_vnni)$' | sort | xargs)"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
decode() { # NAME VARIANT KERNEL
  VARIANT=$2 EDGEINFER_TRACT_Q4_KERNEL=$3 target/release/examples/llama_decode "$model" tract "$threads" "$contexts" "$runs" \
    | sed "s/^{/{\"kernel\": \"$1\", /"
}
fp32() { decode "fp32" fp32 ""; }
q4_tract() { decode "q4 tract" q4 tract; }
q4_f32() { decode "q4 f32" q4 f32; }
q4_int8() { decode "q4 int8" q4 ours; }
bench_rotate "$rounds" "$results" fp32 q4_tract q4_f32 q4_int8

python3 - "$results" "$threads" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
kernels = ["fp32", "q4 tract", "q4 f32", "q4 int8"]
print(f"\nLLaMA-135M decode step ms on tract ({sys.argv[2]} threads), medians over the rounds")
print("| context | kernel | ms | speed vs fp32 | speed vs q4 tract | per round ms |")
print("|---|---|---|---|---|---|")
for context in sorted({r["context"] for r in rows}):
    ms = {k: [r["decode_ms"] for r in rows if r["context"] == context and r["kernel"] == k] for k in kernels}
    med = {k: statistics.median(v) for k, v in ms.items() if v}
    for k in kernels:
        if k in med:
            print(f"| {context} | {k} | {med[k]:.2f} | {med['fp32'] / med[k]:.2f}x | {med['q4 tract'] / med[k]:.2f}x "
                  f"| {' '.join(f'{v:.1f}' for v in ms[k])} |")
PY
