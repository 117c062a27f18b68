"""The Python onnxruntime side of bench/llama_decode.sh: one LLaMA decode measurement in a fresh
process (prefill `context` tokens, then the mean of 8 greedy decode steps; the median of RUNS after
one warm-up), printed as one JSON line per context, like tests/examples/llama_decode.rs.

    python llama_decode_python.py MODEL_DIR THREADS CONTEXTS RUNS [cuda]

With `cuda` (bench/gpu_llama.sh): on the CUDA provider, the KV cache kept in GPU memory through
an IoBinding.
"""

import json
import sys
from pathlib import Path

import numpy as np

from pipelines_python import LlamaBaseline


def main() -> None:
    dir, threads, contexts, runs = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    cuda = sys.argv[5:] == ["cuda"]
    model = LlamaBaseline(dir, threads, cuda)
    kv = {"providers": ",".join(model.model.get_providers()), "kv": "Device"} if cuda else {}
    for context in (int(c) for c in contexts.split(",")):
        if context + 16 > model.context_length:
            print(f"context {context} is beyond this model's {model.context_length} positions; skipped", file=sys.stderr)
            continue
        model.decode_ms(context)
        median = float(np.median([model.decode_ms(context) for _ in range(runs)]))
        print(json.dumps({"side": "python", **kv, "context": context, "decode_ms": round(median, 3)}))


if __name__ == "__main__":
    main()
