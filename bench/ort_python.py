"""Times a model in the Python `onnxruntime` package: the baseline edgeinfer's ort backend is
compared against (same shared library, same threads, same input). Prints JSON."""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--input", action="append", default=[], help="name=file.npy")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    opts = ort.SessionOptions()
    if args.threads:
        opts.intra_op_num_threads = args.threads
    started = time.perf_counter()
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - started) * 1e3
    feeds = {}
    for spec in args.input:
        name, path = spec.split("=", 1)
        feeds[name] = np.load(path)
    sess.run(None, feeds)  # warm-up
    samples = []
    for _ in range(args.runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        samples.append((time.perf_counter() - t) * 1e3)
    samples.sort()
    pick = lambda q: samples[round((len(samples) - 1) * q)]
    print(json.dumps({"load_ms": load_ms, "min_ms": samples[0], "median_ms": pick(0.5), "p90_ms": pick(0.9),
                      "runs": len(samples), "version": ort.__version__}))


if __name__ == "__main__":
    main()
