#!/usr/bin/env bash
# LLaMA on the CUDA execution provider, run for real on a machine with an NVIDIA GPU.
#
# 1. Parity: greedy generation on the bundled fixture through `edgeinfer local generate` on
#    ort/cpu and ort/cuda (KV cache kept in GPU memory) must give HF `generate`'s token ids
#    (models/fixtures/llama/golden/reference.json).
# 2. Speed: a SmolLM-135M-sized model with random weights, generated here, decoded through
#    `tests/examples/llama_decode.rs` on CUDA with the KV cache kept in GPU memory (`device`)
#    and in host memory (`host`, copied to the GPU and back every step), in alternating fresh
#    processes; prints decode ms per token at each context and the host/device ratio.
#
# Environment:
#   EDGEINFER       edgeinfer binary (default: target/release/edgeinfer, built if missing)
#   LLAMA_DECODE    the llama_decode example (default: target/release/examples/llama_decode)
#   ORT_DYLIB_PATH  a GPU build of ONNX Runtime (default: .venv-gpu, `pip install onnxruntime-gpu`)
#   EXPORT_PYTHON   python with torch and transformers (default: python3)
#   OUT             results folder (default: bench/out/gpu-llama)
#   ROUNDS          alternating rounds (default: 3); CONTEXTS (default: 16,256,1024); RUNS (default: 5)
#   EP              the provider list measured (default: cuda; `cpu` dry-runs the script without a GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/bench/out/gpu-llama}
py=${EXPORT_PYTHON:-python3}
rounds=${ROUNDS:-3}
contexts=${CONTEXTS:-16,256,1024}
runs=${RUNS:-5}
ep=${EP:-cuda}
mkdir -p "$out"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt" || [ "$ep" = cpu ]
source bench/common.sh
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  source scripts/ort-env.sh
  ort_venv "$root/.venv-gpu" "onnxruntime-gpu"
  export ORT_DYLIB_PATH=$ORT_LIB
fi
bench_cuda_libs "$py" "$root/.venv-gpu/bin/python"

edgeinfer=${EDGEINFER:-$root/target/release/edgeinfer}
decode=${LLAMA_DECODE:-$root/target/release/examples/llama_decode}
[ -x "$edgeinfer" ] || cargo build --release --locked -p edgeinfer-daemon --bin edgeinfer
[ -x "$decode" ] || cargo build --release --locked -p edgeinfer-tests --example llama_decode

# --- 1. parity on the fixture ------------------------------------------------------------------
fx=$root/models/fixtures/llama
for target in cpu "$ep"; do
  "$edgeinfer" --log info local -m "$fx" --backend ort --ep "$target" generate --json --ignore-eos \
    --max-new-tokens 32 "Once upon a time, a little robot" >"$out/parity-$target.json" 2>"$out/parity-$target.log"
  grep -h 'ONNX Runtime session ready' "$out/parity-$target.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -1 >>"$out/parity.txt" || true
done
"$py" - "$fx/golden/reference.json" "$out" cpu "$ep" <<'PY' | tee -a "$out/parity.txt"
import json, sys
case = next(c for c in json.load(open(sys.argv[1]))["generate"] if not c["from_chat_template"])
golden = case["greedy_new_ids"][:32]
ok = True
for target in sys.argv[3:]:
    ours = json.load(open(f"{sys.argv[2]}/parity-{target}.json"))["token_ids"]
    same = ours == golden
    ok &= same
    print(f"ort/{target}: {len(ours)} tokens, {'equal to' if same else 'DIFFERENT FROM'} HF generate")
sys.exit(0 if ok else 1)
PY

# --- 2. decode speed, KV cache on the GPU vs on the host -----------------------------------------
model=$out/llama-135m
if [ ! -f "$model/model.onnx" ]; then
  (cd models/export && "$py" export_llama.py --random-weights --out "$model") >"$out/export.log" 2>&1
  cp "$fx/tokenizer.json" "$fx/tokenizer_config.json" "$model/"
fi
: >"$out/decode.jsonl"
for round in $(seq 1 "$rounds"); do
  order="device host"; [ $((round % 2)) -eq 0 ] && order="host device"
  for kv in $order; do
    "$decode" "$model" ort 4 "$contexts" "$runs" "$ep" "$kv" 2>>"$out/decode.log" \
      | sed "s/^{/{\"round\": $round, /" >>"$out/decode.jsonl"
  done
done
"$py" - "$out/decode.jsonl" <<'PY' | tee "$out/summary.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"providers: {rows[0]['providers']}")
for kv in ("Device", "Host"):
    print(f"KV cache placed {kv}: kept in {sorted({r['kv_memory'] for r in rows if r['kv'] == kv})} memory")
print("\n| context | KV placed on the device, ms/token | KV on the host, ms/token | host / device |")
print("|---|---|---|---|")
for context in sorted({r["context"] for r in rows}):
    ms = lambda kv: statistics.median(r["decode_ms"] for r in rows if r["context"] == context and r["kv"] == kv)
    d, h = ms("Device"), ms("Host")
    print(f"| {context} | {d:.2f} | {h:.2f} | {h / d:.2f} |")
PY
