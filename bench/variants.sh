#!/usr/bin/env bash
# Precision variants against full precision, on each backend, measured in one run:
#   DINOv2-S/14 at 224 px: fp32, fp16, int8 and quantized (dynamic), qdq (static), q4, q4f16 and
#   bnb4 (transformers.js's 4-bit modes), one image;
#   LLaMA-135M (SmolLM-135M sized) decode: fp32, int8, q4 and q4f16 (MatMulNBits, accuracy level
#   4), bnb4 (MatMulBnb4, NF4).
# Real-size models with random weights (speed does not depend on the values), the variants
# written by models/export/quantize.py as the fixtures' are. Rounds alternate the order of the
# variants, so a slow spell of this VM is shared; the table gives medians and each variant's
# speed relative to fp32 on the same backend.
#
# Then peak resident memory while loading each variant, against the size of its files (a
# quantised model should not cost more than its files), in a fresh process each.
#
#   bench/variants.sh [--rounds N] [--threads N] [--runs N] [--only speed|memory] [--family dinov2|llama]
# Needs the export environment for the models (EXPORT_PYTHON, see bench/common.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=3; threads=$(nproc); runs=10; only=; family=
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2;; --threads) threads=$2; shift 2;; --runs) runs=$2; shift 2;;
    --only) only=$2; shift 2;;
    --family) family=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
out=$root/bench/out
source bench/common.sh
bench_ort
dinov2_variants=(fp32 fp16 int8 quantized qdq q4 q4f16 bnb4)
llama_variants=(fp32 int8 q4 q4f16 bnb4)
[ "$family" = llama ] && dinov2_variants=()
[ "$family" = dinov2 ] && llama_variants=()
if [ "$family" != llama ]; then
  bench_dinov2_s "$out/dinov2-s"
  [ -f "$out/dinov2-s/model_qdq.onnx" ] || bench_export quantize.py --family dinov2 --dir "$out/dinov2-s" \
    --variants fp16,int8,quantized,qdq --no-goldens --calibrate-with "$root"/models/fixtures/dinov2/golden/preprocess.*.npy
  [ -f "$out/dinov2-s/model_bnb4.onnx" ] || bench_export quantize.py --family dinov2 --dir "$out/dinov2-s" \
    --variants q4,q4f16,bnb4 --no-goldens
fi
if [ "$family" != dinov2 ]; then
  bench_llama_135m "$out/llama-135m"
  [ -f "$out/llama-135m/model_int8.onnx" ] || bench_export quantize.py --family llama --dir "$out/llama-135m" \
    --variants int8 --no-goldens
  # q4 with int8 activations (accuracy level 4), as onnxruntime-genai's builder writes CPU int4 and
  # bench/llamacpp.sh benchmarks it: both backends honour the level (an older file without it is
  # rewritten).
  grep -q accuracy_level "$out/llama-135m/model_q4.onnx" 2>/dev/null || bench_export quantize.py --family llama \
    --dir "$out/llama-135m" --variants q4 --no-goldens --accuracy-level 4
  [ -f "$out/llama-135m/model_bnb4.onnx" ] || bench_export quantize.py --family llama --dir "$out/llama-135m" \
    --variants q4f16,bnb4 --no-goldens --accuracy-level 4
fi
[ "$family" = llama ] || cargo build --release --locked -q -p edgeinfer-daemon --bin edgeinfer
[ "$family" = dinov2 ] || cargo build --release --locked -q -p edgeinfer-tests --example llama_decode

memory() {
  cargo build --release --locked -q -p edgeinfer-tests --example load_rss
  echo
  echo "peak resident memory while loading, MiB (fresh process each; 'grown' = peak while loading - before)"
  echo "| model | backend | files | before | grown | grown / files | peak after a request |"
  echo "|---|---|---|---|---|---|---|"
  # Cold: the first model of a fresh process (the runtime's own start-up included); warm: after
  # a tiny model was loaded and dropped, the model's own cost.
  local v b w
  for w in 0 1; do
    for v in ${dinov2_variants[@]+"${dinov2_variants[@]}"}; do
      for b in tract ort; do WARM=$w VARIANT=$v target/release/examples/load_rss dinov2 "$out/dinov2-s" "$b"; done
    done
    for v in ${llama_variants[@]+"${llama_variants[@]}"}; do
      for b in tract ort; do WARM=$w VARIANT=$v target/release/examples/load_rss llama "$out/llama-135m" "$b"; done
    done
  done
}
if [ "$only" = memory ]; then memory; exit 0; fi

results=$(mktemp)
trap 'rm -f "$results"' EXIT
file() { [ "$1" = fp32 ] && echo model.onnx || echo "model_$1.onnx"; }
for round in $(seq 1 "$rounds"); do
  order=("${dinov2_variants[@]}")
  [ $((round % 2)) = 0 ] && order=($(printf '%s\n' "${dinov2_variants[@]}" | tac))
  for v in ${order[@]+"${order[@]}"}; do
    for backend in tract ort; do
      target/release/edgeinfer check "$out/dinov2-s/$(file "$v")" --backend "$backend" --threads "$threads" \
        --dim batch_size=1 --dim height=224 --dim width=224 --runs "$runs" --json 2>/dev/null |
        python3 -c 'import json,sys; t=json.load(sys.stdin)["targets"][0]; print(json.dumps({"model": "dinov2-s", "variant": sys.argv[1], "side": sys.argv[2], "ms": (t["latency"] or {}).get("median_ms"), "error": t["error"]}))' "$v" "$backend" |
        tee -a "$results"
    done
  done
  order=("${llama_variants[@]}")
  [ $((round % 2)) = 0 ] && order=($(printf '%s\n' "${llama_variants[@]}" | tac))
  for v in ${order[@]+"${order[@]}"}; do
    for backend in tract ort; do
      VARIANT=$v target/release/examples/llama_decode "$out/llama-135m" "$backend" "$threads" 16,256 3 |
        python3 -c 'import json,sys
for line in sys.stdin:
    d=json.loads(line); print(json.dumps({"model": "llama-135m decode @%d" % d["context"], "variant": d["variant"], "side": d["side"], "ms": d["decode_ms"], "error": None}))' |
        tee -a "$results"
    done
  done
done

python3 - "$results" "$threads" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\nprecision variants, {sys.argv[2]} threads, medians over the rounds")
print(f"{'model':<26}{'variant':<11}{'tract ms':>10}{'vs fp32':>9}{'ort ms':>10}{'vs fp32':>9}")
models = list(dict.fromkeys(r["model"] for r in rows))
for m in models:
    variants = list(dict.fromkeys(r["variant"] for r in rows if r["model"] == m))
    def med(v, side):
        xs = [r["ms"] for r in rows if r["model"] == m and r["variant"] == v and r["side"] == side and r["ms"]]
        return statistics.median(xs) if xs else None
    for v in variants:
        cells = []
        for side in ("tract", "ort"):
            ms, base = med(v, side), med("fp32", side)
            cells += [f"{ms:10.1f}" if ms else f"{'failed':>10}", f"{base / ms:8.2f}x" if ms and base else f"{'':>9}"]
        print(f"{m:<26}{v:<11}{''.join(cells)}")
print("\n'vs fp32' is speed relative to the fp32 graph on the same backend (above 1 is faster).")
errors = {(r["model"], r["variant"], r["side"]): r["error"] for r in rows if r["error"]}
for k, e in errors.items():
    print("failed:", *k, "-", e)
PY
[ "$only" = speed ] || memory
