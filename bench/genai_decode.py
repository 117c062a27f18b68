"""The onnxruntime-genai side of bench/genai.sh: one decode measurement in a fresh process with
onnxruntime-genai's own generator on an ORT-GenAI folder (prefill `context` ids, then the mean of
8 greedy steps; the median of RUNS after one warm-up), one JSON line per context, like
tests/examples/llama_decode.rs prints for ours.

    python genai_decode.py GENAI_DIR THREADS CONTEXTS RUNS
"""

import json
import sys
import time

import numpy as np
import onnxruntime_genai as og


def prompt_ids(n: int) -> np.ndarray:
    """tests/src/lib.rs bench_prompt_ids: the same ids ours is given."""
    return np.array([[10 + (i * 7 % 200) for i in range(n)]], dtype=np.int32)


def decode_ms(model: og.Model, context: int) -> float:
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=context + 9, min_length=context + 9)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt_ids(context))
    generator.generate_next_token()  # the first token comes with the prefill
    start = time.perf_counter()
    for _ in range(8):
        generator.generate_next_token()
    return (time.perf_counter() - start) * 1e3 / 8


def main() -> None:
    folder, threads, contexts, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    config = og.Config(folder)
    config.clear_providers()
    model = og.Model(config)
    del threads  # set in the folder's genai_config.json session_options by bench/genai.sh
    for context in (int(c) for c in contexts.split(",")):
        decode_ms(model, context)
        median = float(np.median([decode_ms(model, context) for _ in range(runs)]))
        print(json.dumps({"side": "genai", "context": context, "decode_ms": round(median, 3)}))


if __name__ == "__main__":
    main()
