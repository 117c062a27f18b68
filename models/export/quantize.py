"""Write the precision variants onnx-community ships beside a full-precision graph, with
reference outputs from ONNX Runtime and a fidelity report against the fp32 PyTorch goldens.

Variants (file names as onnx-community publishes them, next to model.onnx):
  fp16       model_fp16.onnx       ORT transformers float16 converter, float16 inputs and outputs
  int8       model_int8.onnx       ORT quantize_dynamic, int8 weights in a 7-bit range (MatMulInteger)
  quantized  model_quantized.onnx  ORT quantize_dynamic, uint8 weights (transformers.js "q8")
  qdq        model_qdq.onnx        ORT quantize_static, QDQ, uint8 activations / int8 per-channel
                                   weights (7-bit range, see to_qdq), calibrated on the fixture's
                                   inputs (vision models)
  q4         model_q4.onnx         ORT MatMulNBitsQuantizer, 4-bit blocks of 32, symmetric
  q4f16      model_q4f16.onnx      q4, then the fp16 conversion (float16 activations, inputs and
                                   outputs; MatMulNBits with float16 scales), as transformers.js's
                                   quantizer writes it
  bnb4       model_bnb4.onnx       ORT MatMulBnb4Quantizer, NF4 in blocks of 64 (transformers.js's
                                   defaults)
A graph over --external-data-mb (1) keeps its weights in <file>_data beside it (model_q4.onnx_data),
which ONNX Runtime maps instead of copying (see move_weights_out). The tiny DINOv2 fixture's
variants stay single files; the LLaMA fixture's are written with --external-data-mb 0.1, so that
the tests load both forms.

Fixtures (run from models/export/, after the family's export script):
  python quantize.py --family dinov2 --dir ../fixtures/dinov2
  python quantize.py --family llama --dir ../fixtures/llama --external-data-mb 0.1
This writes the variant graphs, golden/<case>@<variant>.out.*.npy (ONNX Runtime's outputs on the
fixture's parity inputs: the reference our backends must match), variants.json (those parity
cases, in cases.json's format) and fidelity.json (each variant against the fp32 PyTorch goldens).

Production / benchmark folders (no goldens):
  python quantize.py --family dinov2 --dir DIR --no-goldens --calibrate-with ../fixtures/dinov2/golden/preprocess.*.npy
Needs: onnx, onnxruntime, numpy (no torch).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

DEFAULT_VARIANTS = {"dinov2": ["fp16", "int8", "quantized", "qdq", "q4", "q4f16", "bnb4"],
                    "llama": ["fp16", "int8", "quantized", "q4", "q4f16", "bnb4"]}

# Tolerances for our backends against ONNX Runtime's output of the same variant file, as
# (atol, rtol × the largest reference value), about 3× the worst difference measured on tract
# (ORT through our binding matches ORT's Python API exactly). fp16 rounds every intermediate.
# The 8-bit graphs quantise activations to 256 levels (QDQ statically, int8/quantized with
# DynamicQuantizeLinear at run time), so a value that lands on a rounding tie within float noise
# rounds one way on one backend and the other way on the next, and that one step is carried
# onwards: 3e-2 of the range measured on DINOv2's QDQ graph, 3.5e-2 on the LLaMA fixture's int8
# graph (one element of an o_proj input at 188.50002 codes on ORT, 188.5 on tract). Cases without
# such a tie agree to about 1e-6.
TOLERANCE = {"fp16": (2e-2, 2e-2), "int8": (5e-2, 5e-2), "quantized": (5e-2, 5e-2), "qdq": (5e-2, 5e-2),
             "q4": (2e-3, 1e-2), "q4f16": (2e-2, 2e-2), "bnb4": (2e-3, 1e-2)}

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8}


def variant_file(variant: str) -> str:
    return f"model_{variant}.onnx"


# Nodes kept in float32 (between casts) by to_fp16, by name prefix:
# - DINOv2's embeddings (patch embedding and the interpolation of the position table, whose size
#   arithmetic goes wrong in float16: ORT's cubic Resize then rejects its scales);
# - SAM's random-Fourier positional encodings (sin/cos of coordinates times a Gaussian matrix:
#   float16 arguments of tens of radians lose the phase, and each runtime loses it differently).
FP32_PREFIXES = ("/model/embeddings/", "/shared_image_embedding/", "/prompt_encoder/shared_embedding/")


def to_fp16(src: Path | onnx.ModelProto, dst: Path) -> None:
    from onnxruntime.transformers import float16

    model = src if isinstance(src, onnx.ModelProto) else onnx.load(str(src))
    # Inputs and outputs become float16 too, as in onnx-community's model_fp16.onnx: callers
    # must feed the declared type.
    embeddings = [n.name for n in model.graph.node if n.name.startswith(FP32_PREFIXES)]
    converted = float16.convert_float_to_float16(model, keep_io_types=False, node_block_list=embeddings)
    onnx.save(converted, str(dst))


def to_dynamic(src: Path, dst: Path, weight_type: QuantType) -> None:
    """Int8 weights in 7 bits (`reduce_range`, as transformers.js's converter defaults to): see
    to_qdq. Uint8 weights keep 8 bits: ONNX Runtime widens u8 x u8 before adding, exact anywhere."""
    quantize_dynamic(str(src), str(dst), weight_type=weight_type, op_types_to_quantize=["MatMul", "Gemm"],
                     reduce_range=weight_type == QuantType.QInt8)


class Feed(CalibrationDataReader):
    def __init__(self, feeds: list[dict]):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def to_qdq(src: Path, dst: Path, calibration: list[dict]) -> None:
    """Static QDQ with 7-bit weights (`reduce_range`). ONNX Runtime's x86 int8 kernels multiply
    uint8 activations by int8 weights with `vpmaddubsw`, which saturates a pair's sum at int16 on
    CPUs without VNNI (AVX2: AMD before Zen 4, Intel's Atom and client cores): with 8-bit weights
    the tiny DINOv2's CLS cosine to fp32 fell to 0.977 there (0.999 with VNNI), with 7-bit ones
    0.998. ORT's quantization guide gives the same advice; tract does not saturate either way."""
    quantize_static(str(src), str(dst), Feed(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                    op_types_to_quantize=["MatMul", "Gemm", "Conv"])


def q4_model(src: Path, accuracy_level: int | None = None) -> onnx.ModelProto:
    """4-bit MatMulNBits, blocks of 32. `accuracy_level` 4 lets ONNX Runtime's CPU kernels quantise
    the activations to int8 (what onnxruntime-genai's builder writes for CPU int4), and tract does
    the same on CPUs with AVX-512 VNNI; left out, both compute in float32 (the fixtures' setting)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=32, is_symmetric=True, accuracy_level=accuracy_level)
    quant.process()
    quant.model.topological_sort()
    return quant.model.model


def to_bnb4(src: Path, dst: Path) -> None:
    """bitsandbytes-style 4-bit MatMulBnb4: NF4 codes in blocks of 64, one float32 absmax each
    (transformers.js's `bnb4` mode, with its defaults). ONNX Runtime's CPU kernel decodes the
    weight to float32 at every run; tract decodes it once at load (onnx/src/tract_matmul_bnb4.rs)."""
    from onnxruntime.quantization.matmul_bnb4_quantizer import MatMulBnb4Quantizer

    quant = MatMulBnb4Quantizer(onnx.load(str(src)), quant_type=MatMulBnb4Quantizer.NF4, block_size=64)
    quant.process()
    quant.model.topological_sort()
    onnx.save(quant.model.model, str(dst))


def move_weights_out(path: Path) -> None:
    """Moves the graph's weights into `<file>_data` beside it (ONNX external data, as onnx-community
    ships its larger graphs). ONNX Runtime then maps the weights from that file instead of
    copying them out of the parsed graph: loading SmolLM-135M q4 peaked at 1.68× the files with
    the weights inside and 0.80× with them outside, and the resident memory after a request
    went from 345 to 180 MB (tests/examples/load_rss.rs); decoding is as fast. DINOv2-S int8 in a
    process where ONNX Runtime is already initialised: 50 MB for a 24 MB file, 16 MB with the
    weights outside."""
    model = onnx.load(path)
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + "_data",
              size_threshold=1024)
    # onnx creates the data file private (0600): give it the graph's permissions, so a service
    # user that can read the graph can read its weights.
    path.with_name(path.name + "_data").chmod(path.stat().st_mode & 0o777)


def graph_bytes(path: Path) -> int:
    """A graph's size with its external data file."""
    data = path.with_name(path.name + "_data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def feed_for(sess: ort.InferenceSession, arrays: dict) -> dict:
    """The arrays cast to the element types the graph declares."""
    declared = {i.name: ORT_TYPES[i.type] for i in sess.get_inputs()}
    return {k: np.asarray(v).astype(declared[k]) for k, v in arrays.items()}


def load_cases(folder: Path) -> list[dict]:
    return [c for c in json.loads((folder / "cases.json").read_text())["cases"] if c["model"] == "model.onnx"]


def case_arrays(folder: Path, case: dict, key: str) -> dict:
    return {k: np.load(folder / v) for k, v in case[key].items()}


def batched(pixels: np.ndarray) -> np.ndarray:
    return pixels[None] if pixels.ndim == 3 else pixels


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def fidelity(family: str, folder: Path, sess: ort.InferenceSession, cases: list[dict]) -> dict:
    """The variant against the fp32 PyTorch goldens: DINOv2 embedding cosine (per image, on the
    parity inputs and on the real photos), LLaMA top-1 next-token agreement over every position
    of the prefill cases, and the greedy continuations of the reference prompts."""
    report: dict = {}
    if family == "dinov2":
        cos = []
        for case in cases:
            want = case_arrays(folder, case, "outputs")["pooler_output"]
            got = sess.run(["pooler_output"], feed_for(sess, case_arrays(folder, case, "inputs")))[0]
            cos += [cosine(g, w) for g, w in zip(got, want)]
        report["pooler_cosine_min_parity_inputs"] = min(cos)
        photos = []
        for pre in sorted((folder / "golden").glob("preprocess.*.npy")):
            name = pre.name.split(".")[1]
            want = np.load(folder / "golden" / f"e2e.{name}.last_hidden_state.npy")
            got = sess.run(["last_hidden_state"], feed_for(sess, {"pixel_values": batched(np.load(pre))}))[0]
            want = want.reshape(got.shape)
            photos.append({"photo": name, "cls_cosine": cosine(got[:, 0], want[:, 0]),
                           "mean_patch_cosine": cosine(got[:, 1:].mean(1), want[:, 1:].mean(1))})
        report["photos"] = photos
        report["cls_cosine_min_photos"] = min(p["cls_cosine"] for p in photos)
    else:
        agree = total = 0
        for case in cases:
            if not case["name"].startswith("prefill"):
                continue
            want = case_arrays(folder, case, "outputs")["logits"]
            got = sess.run(["logits"], feed_for(sess, case_arrays(folder, case, "inputs")))[0]
            mask = case_arrays(folder, case, "inputs")["attention_mask"].astype(bool)
            top_got, top_want = got.argmax(-1)[mask], want.argmax(-1)[mask]
            agree += int((top_got == top_want).sum())
            total += int(mask.sum())
        report["top1_agreement"] = agree / total
        report["positions"] = total
        report["greedy"] = [greedy(sess, case) for case in reference_prompts(folder)]
    return report


def reference_prompts(folder: Path) -> list[dict]:
    return json.loads((folder / "golden" / "reference.json").read_text())["generate"]


def greedy(sess: ort.InferenceSession, case: dict) -> dict:
    """ONNX Runtime's greedy continuation of a reference prompt on this variant, one token per
    step with the KV cache fed back (what `edgeinfer generate` does): the reference the LLaMA
    pipeline's variant test compares with, next to transformers' fp32 continuation."""
    declared = {i.name: i for i in sess.get_inputs()}
    past = {n: np.zeros([1, i.shape[1], 0, i.shape[3]], ORT_TYPES[i.type])
            for n, i in declared.items() if n.startswith("past_key_values")}
    ids = list(case["prompt_ids"])
    step, total, new, margins = list(ids), 0, [], []
    for _ in range(len(case["greedy_new_ids"])):
        total += len(step)
        feed = {"input_ids": np.array([step], np.int64), "attention_mask": np.ones([1, total], np.int64),
                "position_ids": np.arange(total - len(step), total, dtype=np.int64)[None], **past}
        outs = sess.run(None, feed_for(sess, {k: v for k, v in feed.items() if k in declared}))
        named = dict(zip([o.name for o in sess.get_outputs()], outs))
        last = named["logits"][0, -1].astype(np.float32)
        token = int(last.argmax())
        margins.append(float(last[token] - np.partition(last, -2)[-2]))
        new.append(token)
        past = {n: named[n.replace("past_key_values", "present")] for n in past}
        step = [token]
    # The gap between the chosen token's logit and the runner-up's at each step: where it is
    # smaller than two implementations' rounding differences, either choice is right.
    return {"prompt": case["prompt"], "greedy_new_ids": new, "top1_margins": [round(m, 5) for m in margins],
            "fp32_greedy_new_ids": case["greedy_new_ids"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(DEFAULT_VARIANTS), required=True)
    ap.add_argument("--dir", type=Path, required=True, help="folder holding model.onnx")
    ap.add_argument("--variants", help="comma-separated subset (default: all for the family)")
    ap.add_argument("--no-goldens", action="store_true", help="only write the variant graphs")
    ap.add_argument("--calibrate-with", nargs="*", type=Path, default=[],
                    help="pixel_values .npy files to calibrate qdq on (with --no-goldens), e.g. "
                         "../fixtures/dinov2/golden/preprocess.*.npy")
    ap.add_argument("--accuracy-level", type=int, choices=[0, 1, 2, 3, 4],
                    help="q4, q4f16: MatMulNBits' accuracy_level (4: int8 activations on ONNX Runtime's CPU "
                         "kernels and on tract with AVX-512 VNNI, faster; the fixtures leave it out)")
    ap.add_argument("--external-data-mb", type=float, default=1,
                    help="graphs larger than this keep their weights in <file>_data (default 1 MiB: every "
                         "real model; the LLaMA fixture uses 0.1)")
    args = ap.parse_args()
    folder: Path = args.dir
    src = folder / "model.onnx"
    variants = args.variants.split(",") if args.variants else DEFAULT_VARIANTS[args.family]
    cases = [] if args.no_goldens else load_cases(folder)
    calibration = [case_arrays(folder, c, "inputs") for c in cases]
    if args.family == "dinov2":
        photos = args.calibrate_with or sorted((folder / "golden").glob("preprocess.*.npy"))
        calibration += [{"pixel_values": batched(np.load(p))} for p in photos]

    variant_cases, report = [], {}
    for variant in variants:
        dst = folder / variant_file(variant)
        dst.with_name(dst.name + "_data").unlink(missing_ok=True)  # from an earlier, larger run
        if variant == "fp16":
            to_fp16(src, dst)
        elif variant == "int8":
            to_dynamic(src, dst, QuantType.QInt8)
        elif variant == "quantized":
            to_dynamic(src, dst, QuantType.QUInt8)
        elif variant == "qdq":
            if not calibration:
                raise SystemExit("qdq needs calibration inputs: run it on a fixture folder (cases.json)")
            to_qdq(src, dst, calibration)
        elif variant == "q4":
            onnx.save(q4_model(src, args.accuracy_level), str(dst))
        elif variant == "q4f16":
            to_fp16(q4_model(src, args.accuracy_level), dst)
        elif variant == "bnb4":
            to_bnb4(src, dst)
        else:
            raise SystemExit(f"unknown variant {variant}")
        if dst.stat().st_size > args.external_data_mb * 2**20:
            move_weights_out(dst)
        print(f"{dst}: {graph_bytes(dst)} bytes")
        if args.no_goldens:
            continue
        sess = session(dst)
        atol, rtol = TOLERANCE[variant]
        for case in cases:
            feed = feed_for(sess, case_arrays(folder, case, "inputs"))
            names = list(case["outputs"])
            outs = sess.run(names, feed)
            goldens = {}
            for name, value in zip(names, outs):
                rel = f"golden/{case['name']}@{variant}.out.{name}.npy"
                np.save(folder / rel, np.ascontiguousarray(value.astype(np.float32)))
                goldens[name] = rel
            variant_cases.append({"name": f"{case['name']}@{variant}", "model": variant_file(variant),
                                  "inputs": case["inputs"], "outputs": goldens, "atol": atol, "rtol": rtol,
                                  "note": "reference: onnxruntime " + ort.__version__ + " (CPU) on this variant"})
        report[variant] = {"file": variant_file(variant), "bytes": graph_bytes(dst),
                           "fp32_bytes": src.stat().st_size, **fidelity(args.family, folder, sess, cases)}
        print(json.dumps({variant: report[variant]}, indent=1))
    if not args.no_goldens:
        # A subset (--variants) replaces its own entries and keeps the other variants'.
        written = {variant_file(v) for v in variants}
        if args.variants and (folder / "variants.json").exists():
            kept = json.loads((folder / "variants.json").read_text())["cases"]
            variant_cases = [c for c in kept if c["model"] not in written] + variant_cases
            kept_report = json.loads((folder / "fidelity.json").read_text())
            report = {**{k: v for k, v in kept_report.items() if k not in report}, **report}
        (folder / "variants.json").write_text(json.dumps({"cases": variant_cases}, indent=2) + "\n")
        (folder / "fidelity.json").write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
