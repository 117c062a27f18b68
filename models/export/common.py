"""Helpers shared by the export scripts: seeding, weight re-randomisation, saving goldens and
writing the fixture manifest that the Rust parity tests read."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import onnx
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def rerandomize(module: torch.nn.Module, seed: int, scale: float = 1.0) -> None:
    """Give every parameter non-trivial random values.

    Default initialisations of SAM and friends zero many tensors (relative position tables,
    output projections), which makes outputs near-constant and parity tests meaningless. Matrices
    get N(0, scale/sqrt(fan_in)); vectors (biases, norms, embeddings) get N(0, 0.1*scale), norm
    weights around 1.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            fan_in = p[0].numel()
            std = scale / math.sqrt(max(fan_in, 1))
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        else:
            noise = torch.randn(p.shape, generator=gen) * 0.1 * scale
            is_norm_weight = (name.endswith("weight") and ("norm" in name or "ln" in name)) or "lambda" in name
            p.copy_(noise + (1.0 if is_norm_weight else 0.0))


def save_npy(path: Path, array) -> str:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.ascontiguousarray(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path.name


class Manifest:
    """`cases.json` beside a fixture's models: each case names a model, its input .npy files and
    the golden output .npy files with a tolerance. The Rust parity tests run every case on every
    backend."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.cases: list[dict] = []

    def add(self, name: str, model: str, inputs: dict, outputs: dict, atol: float = 1e-4, rtol: float = 1e-4,
            note: str = "", dims: dict | None = None) -> None:
        golden = self.folder / "golden"
        case = {
            "name": name,
            "model": model,
            "inputs": {k: f"golden/{save_npy(golden / f'{name}.in.{k}.npy', v)}" for k, v in inputs.items()},
            "outputs": {k: f"golden/{save_npy(golden / f'{name}.out.{k}.npy', v)}" for k, v in outputs.items()},
            "atol": atol,
            "rtol": rtol,
        }
        if note:
            case["note"] = note
        if dims:
            case["dims"] = dims
        self.cases.append(case)

    def write(self) -> None:
        (self.folder / "cases.json").write_text(json.dumps({"cases": self.cases}, indent=2) + "\n")


def check_with_onnxruntime(model_path: Path, inputs: dict, expected: dict, atol: float, rtol: float) -> None:
    """Runs the exported file in onnxruntime and compares to the PyTorch outputs, so a broken
    export is caught here rather than in the Rust tests."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    feeds = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, feeds)))
    for k, want in expected.items():
        want = want.detach().cpu().numpy() if isinstance(want, torch.Tensor) else want
        diff = np.abs(got[k].astype(np.float64) - want.astype(np.float64))
        bound = atol + rtol * np.abs(want)
        worst = float(diff.max()) if diff.size else 0.0
        if not np.all(diff <= bound):
            raise SystemExit(f"{model_path.name}: onnxruntime output {k} differs from PyTorch by {worst:.3g}")
        print(f"  onnxruntime check {model_path.name}:{k} max abs diff {worst:.2e}")


def onnx_size_report(path: Path) -> str:
    model = onnx.load(str(path), load_external_data=False)
    ins = [f"{i.name}{[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]}" for i in model.graph.input]
    outs = [f"{o.name}{[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]}" for o in model.graph.output]
    return f"{path.name}: {os.path.getsize(path) / 1e6:.2f} MB, opset {model.opset_import[0].version}, inputs {ins}, outputs {outs}"


@torch.no_grad()
def spread_mask_logits(hypernetwork_mlps, upscaled_mean: torch.Tensor) -> None:
    """First half of the SAM decoders' calibration: project each hypernetwork MLP's output layer
    orthogonally to the mean upscaled embedding, so mask logits stop being one shared offset."""
    proj = torch.eye(upscaled_mean.numel()) - torch.outer(upscaled_mean, upscaled_mean) / upscaled_mean.dot(upscaled_mean)
    for mlp in hypernetwork_mlps:
        last = mlp.layers[-1]
        last.weight.copy_(proj @ last.weight)
        last.bias.copy_(proj @ last.bias)


@torch.no_grad()
def scale_mask_logits(hypernetwork_mlps, logits, target_std: float) -> None:
    """Second half: scale the output layers so the logits' standard deviation is target_std."""
    scale = target_std / float(np.std(logits))
    for mlp in hypernetwork_mlps:
        mlp.layers[-1].weight.mul_(scale)
        mlp.layers[-1].bias.mul_(scale)
