"""The Python baseline of tests/benches/pipelines.rs: the same models, images and prompts through
the Python `onnxruntime` package (same shared library version, same threads) with the usual
numpy + Pillow pre-processing, as a Python service would run them. Then reads the criterion
results of the Rust run and prints one table: ours (ort, tract) against this baseline.

    python pipelines_python.py --models DIR --photos DIR --criterion target/criterion [--threads N]
                               [--only sam,dinov2,llama]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def timed(fn, runs: int) -> float:
    """Median wall time of fn() in ms, after one warm-up call."""
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.median(samples))


def session(path: Path, threads: int, providers: list[str] | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


def sam(dir: Path, photo: Image.Image, threads: int, runs: int) -> dict[str, float]:
    manifest = json.loads((dir / "manifest.json").read_text()) if (dir / "manifest.json").exists() else {}
    encoder = session(dir / manifest.get("encoder_plain", "encoder_plain.onnx"), threads)
    decoder = session(dir / "decoder.onnx", threads)
    size = encoder.get_inputs()[0].shape[-1]
    mean = np.array(manifest.get("pixel_mean", [123.675, 116.28, 103.53]), dtype=np.float32)
    std = np.array(manifest.get("pixel_std", [58.395, 57.12, 57.375]), dtype=np.float32)
    w, h = photo.size

    def embed():
        scale = size / max(w, h)
        rw, rh = int(w * scale + 0.5), int(h * scale + 0.5)
        x = (np.asarray(photo.resize((rw, rh), Image.BILINEAR), dtype=np.float32) - mean) / std
        padded = np.zeros((1, 3, size, size), dtype=np.float32)
        padded[0, :, :rh, :rw] = x.transpose(2, 0, 1)
        return encoder.run(None, {encoder.get_inputs()[0].name: padded})[0], (rw / w, rh / h)

    embedding, (sx, sy) = embed()
    grid = embedding.shape[-1]

    def feeds():
        """One positive click in the middle, plus the padding point (official ONNX usage)."""
        return {
            "image_embeddings": embedding,
            "point_coords": np.array([[[w / 2 * sx, h / 2 * sy], [0.0, 0.0]]], dtype=np.float32),
            "point_labels": np.array([[1, -1]], dtype=np.float32),
            "mask_input": np.zeros((1, 1, 4 * grid, 4 * grid), dtype=np.float32),
            "has_mask_input": np.zeros(1, dtype=np.float32),
        }

    def prompt():
        masks, iou, _ = decoder.run(None, {**feeds(), "orig_im_size": np.array([h, w], dtype=np.float32)})
        return masks[0, 1:] > 0.0, iou

    result = {"sam/encoder": timed(embed, runs), "sam/decoder per prompt": timed(prompt, runs)}
    if (dir / "decoder_lowres.onnx").exists():
        # The decoder without in-graph upsampling; the three returned masks are upsampled here as
        # upstream's postprocess_masks does: to the encoder size, crop the padding, to the original.
        lowres = session(dir / "decoder_lowres.onnx", threads)
        rw, rh = int(w * sx + 0.5), int(h * sy + 0.5)

        def prompt_lowres():
            iou, low = lowres.run(None, feeds())
            masks = []
            for m in low[0, 1:]:
                full = Image.fromarray(m).resize((size, size), Image.BILINEAR).crop((0, 0, rw, rh))
                masks.append(np.asarray(full.resize((w, h), Image.BILINEAR)) > 0.0)
            return masks, iou

        result["sam/decoder per prompt, low-res graph"] = timed(prompt_lowres, runs)
    return result


def dinov2(dir: Path, photos: list[Image.Image], threads: int, runs: int) -> dict[str, float]:
    model = session(dir / "model.onnx", threads)
    config = json.loads((dir / "preprocessor_config.json").read_text())
    short = config.get("size", {}).get("shortest_edge", 256)
    crop = config.get("crop_size", {}).get("height", 224)

    def pixels(img: Image.Image) -> np.ndarray:
        w, h = img.size
        scale = short / min(w, h)
        img = img.resize((max(1, int(round(w * scale))), max(1, int(round(h * scale)))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - crop) // 2, (h - crop) // 2
        x = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
        return ((x - MEAN) / STD).transpose(2, 0, 1)

    def embed(images):
        batch = np.stack([pixels(i) for i in images])
        return model.run(None, {"pixel_values": batch})[0][:, 0]

    batch = [photos[i % len(photos)] for i in range(4)]
    return {
        "dinov2/embed 1 image": timed(lambda: embed(photos[:1]), runs),
        "dinov2/embed batch of 4": timed(lambda: embed(batch), runs),
    }


class LlamaBaseline:
    """A LLaMA KV-cache export run as a Python service would: numpy feeds, the cache fed back.
    With `cuda`, on the CUDA provider with the cache kept in GPU memory through an IoBinding (the
    way onnxruntime's own GPU generation loops keep it), the logits copied to the host."""

    def __init__(self, dir: Path, threads: int, cuda: bool = False):
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else None
        self.model = session(dir / "model.onnx", threads, providers)
        self.cuda = cuda
        self.kv_device = "cuda" if cuda else "cpu"
        if cuda and self.model.get_providers()[0] != "CUDAExecutionProvider":
            raise SystemExit(f"CUDA provider not active: {self.model.get_providers()}")
        inputs = {i.name: i for i in self.model.get_inputs()}
        self.past = sorted(n for n in inputs if n.startswith("past_key_values."))
        self.kv_heads, self.head_dim = inputs[self.past[0]].shape[1], inputs[self.past[0]].shape[3]
        self.out_names = [o.name for o in self.model.get_outputs()]
        config = json.loads((dir / "config.json").read_text())
        self.context_length = config.get("max_position_embeddings", 2048)

    @staticmethod
    def prompt(context: int) -> list[int]:
        """The benchmark's prompt ids (as `edgeinfer_tests::bench_prompt_ids` makes them)."""
        return [10 + (i * 7 % 200) for i in range(context)]

    @staticmethod
    def token_feeds(ids: list[int], start: int) -> dict[str, np.ndarray]:
        """`input_ids`, `attention_mask` and `position_ids` for `ids` after `start` cached tokens."""
        n = len(ids)
        return {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, start + n), dtype=np.int64),
            "position_ids": np.arange(start, start + n, dtype=np.int64)[None],
        }

    def step(self, ids: list[int], cache: dict | None, start: int):
        if self.cuda:
            return self.step_bound(ids, cache, start)
        feeds = self.token_feeds(ids, start)
        for name in self.past:
            feeds[name] = cache[name] if cache else np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32)
        outs = dict(zip(self.out_names, self.model.run(None, feeds)))
        cache = {name: outs[name.replace("past_key_values", "present")] for name in self.past}
        return int(np.argmax(outs["logits"][0, -1])), cache

    def step_bound(self, ids: list[int], cache: dict | None, start: int):
        """One step through an IoBinding: the cache stays an OrtValue in `kv_device` memory."""
        binding = self.model.io_binding()
        for name, array in self.token_feeds(ids, start).items():
            binding.bind_cpu_input(name, array)
        for name in self.past:
            if cache:
                binding.bind_ortvalue_input(name, cache[name])
            else:
                binding.bind_cpu_input(name, np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32))
        binding.bind_output("logits", "cpu")
        for name in self.past:
            binding.bind_output(name.replace("past_key_values", "present"), self.kv_device)
        self.model.run_with_iobinding(binding)
        logits, *present = binding.get_outputs()
        return int(np.argmax(logits.numpy()[0, -1])), dict(zip(self.past, present))

    def decode_ms(self, context: int) -> float:
        """Prefill `context` tokens, then the mean time of 8 greedy decode steps."""
        token, cache = self.step(self.prompt(context), None, 0)
        start = time.perf_counter()
        for i in range(8):
            token, cache = self.step([token], cache, context + i)
        return (time.perf_counter() - start) * 1e3 / 8


def llama(dir: Path, threads: int, runs: int) -> dict[str, float]:
    model = LlamaBaseline(dir, threads)
    results = {}
    for context in (16, 256, 1024):
        if context + 16 > model.context_length:
            continue
        ids = model.prompt(context)
        results[f"llama/prefill {context} tokens"] = timed(lambda: model.step(ids, None, 0), runs)
        model.decode_ms(context)
        samples = [model.decode_ms(context) for _ in range(max(3, runs // 3))]
        results[f"llama/decode step at {context}"] = float(np.median(samples))
    return results


def criterion_ms(root: Path, key: str, backend: str) -> float | None:
    group, name = key.split("/", 1)
    path = root / group / f"{name}_{backend}" / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"] / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, required=True, help="folder with sam/, dinov2/, llama/")
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--criterion", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--only", default="sam,dinov2,llama", help="comma-separated families")
    args = ap.parse_args()
    only = args.only.split(",")
    photos = [Image.open(args.photos / n).convert("RGB") for n in ("chelsea.png", "coffee.png")]
    baseline = {}
    if "sam" in only:
        baseline.update(sam(args.models / "sam", photos[0], args.threads, args.runs))
    if "dinov2" in only:
        baseline.update(dinov2(args.models / "dinov2", photos, args.threads, args.runs))
    if "llama" in only:
        baseline.update(llama(args.models / "llama", args.threads, args.runs))

    print(f"onnxruntime {ort.__version__} (Python, numpy + Pillow pre-processing) = baseline; medians in ms")
    print(f"| {'':40} | {'Python ORT':>10} | {'ours, ort':>10} | {'ratio':>6} | {'ours, tract':>11} | {'tract/ort':>9} |")
    print(f"|{'-' * 42}|{'-' * 12}|{'-' * 12}|{'-' * 8}|{'-' * 13}|{'-' * 11}|")
    for key, py in baseline.items():
        ours = criterion_ms(args.criterion, key, "ort")
        tract = criterion_ms(args.criterion, key, "tract")
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"
        ratio = f"{ours / py:.2f}" if ours is not None else "-"
        vs = f"{tract / ours:.2f}" if tract is not None and ours is not None else "-"
        print(f"| {key:40} | {py:>10.2f} | {fmt(ours):>10} | {ratio:>6} | {fmt(tract):>11} | {vs:>9} |")


if __name__ == "__main__":
    main()
