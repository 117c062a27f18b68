#!/usr/bin/env bash
# LLaMA-135M decode on ONNX Runtime (or tract: --backend tract), both run by us: our own export (Optimum layout,
# models/export/export_llama.py: plain attention, the KV cache one position longer each step)
# against the ORT-GenAI model builder's folder of the same architecture and precision (fused
# norms, GroupQueryAttention, the KV cache updated in place), in alternating fresh-process
# rounds. Random weights (speed does not depend on them).
#
#   bench/llama_layouts.sh [--precision fp32|int4] [--backend ort|tract] [--attention plain|gqa]
#                          [--rounds N] [--threads N] [--contexts 16,256] [--runs N]
# --attention gqa benchmarks our export in the GenAI layout instead (export_llama.py --attention gqa:
# one GroupQueryAttention node per layer, genai_config.json, the cache updated in place on ORT).
# On tract the builder's GroupQueryAttention runs written out in standard ops (onnx/src/tract_gqa.rs)
# and its cache grows one position per step, as our export's does.
# Needs GENAI_PYTHON (a Python with onnxruntime-genai 0.18.0, torch and transformers) to build the
# GenAI folder the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
precision=fp32; backend=ort; attention=plain; rounds=3; threads=$(nproc); contexts=16,256; runs=5
while [ $# -gt 0 ]; do
  case $1 in
    --precision) precision=$2; shift 2;; --backend) backend=$2; shift 2;; --attention) attention=$2; shift 2;; --rounds) rounds=$2; shift 2;; --threads) threads=$2; shift 2;;
    --contexts) contexts=$2; shift 2;; --runs) runs=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
out=$root/bench/out
source bench/common.sh
bench_ort
own=$out/llama-135m; [ "$attention" = gqa ] && own=$out/llama-135m-gqa
bench_llama_135m "$own" "$attention"
genai=$out/llama-135m-genai-$precision
bench_genai_folder "${GENAI_PYTHON:?set GENAI_PYTHON to a Python with onnxruntime-genai 0.18.0}" "$precision" "$genai"
# Our export's variant of the same precision (fp32: model.onnx; q4: model_q4.onnx).
variant=$precision; [ "$variant" = int4 ] && variant=q4
[ "$variant" = fp32 ] || grep -q accuracy_level "$own/model_q4.onnx" 2>/dev/null \
  || bench_export quantize.py --family llama --dir "$own" --variants q4 --no-goldens --accuracy-level 4
cargo build --release --locked -q -p edgeinfer-tests --example llama_decode

results=$(mktemp)
trap 'rm -f "$results"' EXIT
ours() { VARIANT=$variant target/release/examples/llama_decode "$own" "$backend" "$threads" "$contexts" "$runs" | sed 's/^{/{"graph": "own", /'; }
builder() { target/release/examples/llama_decode "$genai" "$backend" "$threads" "$contexts" "$runs" | sed 's/^{/{"graph": "genai", /'; }
bench_alternate "$rounds" "$results" ours builder

python3 bench/ratio_table.py "$results" graph \
  "LLaMA-135M $precision decode step ms on $backend ($threads threads): our export ($attention attention) vs the GenAI builder's folder" \
  "our export=own" "GenAI builder folder=genai" b/a "our export's tokens/s relative (median)" "per round"
