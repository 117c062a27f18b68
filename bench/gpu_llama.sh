#!/usr/bin/env bash
# LLaMA on the CUDA execution provider, run for real on a machine with an NVIDIA GPU.
#
# 1. Parity: greedy generation on the bundled fixture through `edgeinfer local generate` on
#    ort/cpu and ort/cuda (KV cache kept in GPU memory) must give HF `generate`'s token ids
#    (models/fixtures/llama/golden/reference.json).
# 2. Speed: a SmolLM-135M-sized model with random weights, generated here, decoded through
#    `tests/examples/llama_decode.rs` on CUDA with the KV cache kept in GPU memory (`device`)
#    and in host memory (`host`, copied to the GPU and back every step), in alternating fresh
#    processes; prints decode ms per token at each context and the host/device ratio. With
#    PYTHON_ORT, the same model through Python onnxruntime-gpu with the cache in GPU memory
#    (IoBinding; bench/llama_decode_python.py) joins the rounds as the raw-ONNX-Runtime baseline.
#
# Environment:
#   EDGEINFER       edgeinfer binary (default: target/release/edgeinfer, built if missing)
#   LLAMA_DECODE    the llama_decode example (default: target/release/examples/llama_decode)
#   ORT_DYLIB_PATH  a GPU build of ONNX Runtime (default: .venv-gpu, `pip install onnxruntime-gpu`)
#   EXPORT_PYTHON   python with torch and transformers (default: python3)
#   PYTHON_ORT      python that imports onnxruntime-gpu (the same build as ORT_DYLIB_PATH), optional
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
sides=(device host); [ -n "${PYTHON_ORT:-}" ] && sides+=(python)
for round in $(seq 1 "$rounds"); do
  n=${#sides[@]}
  for k in $(seq 0 $((n - 1))); do
    side=${sides[$(((k + round) % n))]}  # the order rotates every round
    if [ "$side" = python ]; then
      python_ep=(); [ "$ep" = cuda ] && python_ep=(cuda)
      # A baseline that fails is reported (decode.log) without losing our rows.
      (cd bench && $PYTHON_ORT llama_decode_python.py "$model" 4 "$contexts" "$runs" "${python_ep[@]}") ||
        echo "round $round: the Python baseline failed" >&2
    else
      "$decode" "$model" ort 4 "$contexts" "$runs" "$ep" "$side"
    fi 2>>"$out/decode.log" | sed "s/^{/{\"round\": $round, /" >>"$out/decode.jsonl"
  done
done
"$py" - "$out/decode.jsonl" <<'PY' | tee "$out/summary.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ours = [r for r in rows if r["side"] == "ort"]
python = [r for r in rows if r["side"] == "python"]
print(f"providers: {ours[0]['providers']}")
for kv in ("Device", "Host"):
    print(f"KV cache placed {kv}: kept in {sorted({r['kv_memory'] for r in ours if r['kv'] == kv})} memory")
print(f"rounds: {len({r['round'] for r in rows})}; ms per decode step, median over rounds")
head = "| context | ours, KV on the device | ours, KV on the host | host / device |"
if python:
    head += " Python ORT, KV on the device (IoBinding) | ours / Python (paired) |"
print("\n" + head)
print("|---" * (head.count("|") - 1) + "|")
for context in sorted({r["context"] for r in rows}):
    by = lambda rs: {r["round"]: r["decode_ms"] for r in rs if r["context"] == context}
    dev, host = by(r for r in ours if r["kv"] == "Device"), by(r for r in ours if r["kv"] == "Host")
    d, h = statistics.median(dev.values()), statistics.median(host.values())
    line = f"| {context} | {d:.2f} | {h:.2f} | {h / d:.2f} |"
    if python:
        py = by(python)
        pairs = [dev[k] / py[k] for k in dev if k in py]
        line += f" {statistics.median(py.values()):.2f} | {statistics.median(pairs):.2f} |" if pairs else " - | - |"
    print(line)
PY
