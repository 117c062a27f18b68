"""Folds the shape arithmetic a traced transformers model leaves in its ONNX graph.

`torch.onnx.export` records every `x.shape[i]` a module reads as Shape -> Gather -> Unsqueeze ->
Concat chains, so each reshape, slice and expand of a LLaMA layer gets its own little graph that
ONNX Runtime evaluates node by node at every step: 6,906 nodes for SmolLM-135M, of which ONNX
Runtime's own optimisations leave 2,909 (489 Unsqueeze, 423 Gather, 301 Concat, 152 Shape ...).

ONNX Runtime's symbolic shape inference (`onnxruntime.tools.symbolic_shape_infer`) knows what
each of those small integer tensors holds, in terms of the graph's named dimensions. This pass
puts a constant in their place wherever that is exact:
  - a value that is fully known (a head count, a slice end) becomes an initializer;
  - a Reshape target with symbolic entries becomes a constant using ONNX's own conventions:
    0 where the entry equals the input's dimension at that position (copied at run time), at
    most one -1 (inferred);
  - an Expand target with symbolic entries becomes 1 wherever the entry equals the input's
    (right-aligned) dimension, which broadcasting keeps.
The chains that fed them are then dead and removed. Values are never approximated: the folded
graph computes the same outputs bit for bit, which `verify_same` checks on ONNX Runtime.

Identical constants are then shared (`share_identical_constants`): a trace records a constant
once per use, so a matrix every layer builds the same way (the packed LLaMA layers' rotate_half)
would otherwise be stored once per layer.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import sympy
from onnx import helper, numpy_helper
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference


def _inferred(model: onnx.ModelProto) -> SymbolicShapeInference:
    """Runs ONNX Runtime's symbolic shape inference and returns its state: `sympy_data_` holds
    the values of shape tensors, `known_vi_` every tensor's shape."""
    inference = SymbolicShapeInference(int_max=2**31 - 1, auto_merge=True, guess_output_rank=False, verbose=0)
    inference._preprocess(model)
    while inference.run_:
        inference._infer_impl()
    return inference


def _as_int(value) -> int | None:
    if isinstance(value, (int, np.integer, sympy.Integer)):
        return int(value)
    return None


def _same(a, b) -> bool:
    """Whether two dimension expressions are equal whatever the graph's dimensions are."""
    try:
        return sympy.simplify(sympy.sympify(str(a)) - sympy.sympify(str(b))) == 0
    except (sympy.SympifyError, TypeError):
        return False


def _dims(inference: SymbolicShapeInference, name: str) -> list | None:
    info = inference.known_vi_.get(name)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            return None
    return dims


def _reshape_target(values: list, ints: list, source: list) -> list[int] | None:
    if any(i == 0 for i in ints):
        return None  # a literal 0 would read as "copy the input's dimension"
    target = []
    for i, (value, known) in enumerate(zip(values, ints)):
        if known is not None:
            target.append(known)
        elif i < len(source) and _same(source[i], value):
            target.append(0)
        else:
            target.append(-1)
    return target if target.count(-1) <= 1 else None


def _expand_target(values: list, ints: list, source: list) -> list[int] | None:
    offset = len(values) - len(source)
    if offset < 0:
        return None
    target = []
    for i, (value, known) in enumerate(zip(values, ints)):
        if known is not None:
            target.append(known)
        elif i >= offset and _same(source[i - offset], value):
            target.append(1)
        else:
            return None
    return target


def _remove_dead(graph: onnx.GraphProto) -> None:
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(live))
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def share_identical_constants(model: onnx.ModelProto) -> int:
    """Points every use of a constant (a Constant node's tensor, or an initializer held in the file
    rather than in external data) at the first one of the same kind with the same type, shape and
    bytes, and removes the copies; returns how many it removed. Graph inputs and outputs keep
    their names."""
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return 0  # names used inside subgraphs are not rewritten here
    keep = {i.name for i in graph.input} | {o.name for o in graph.output}

    def key(kind: str, t: onnx.TensorProto) -> tuple:
        return (kind, t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())

    first: dict[tuple, str] = {}
    alias: dict[str, str] = {}

    def note(k: tuple, name: str) -> None:
        if k in first:
            alias[name] = first[k]
        else:
            first[k] = name

    for t in graph.initializer:
        if t.name not in keep and t.data_location != onnx.TensorProto.EXTERNAL:
            note(key("initializer", t), t.name)
    for node in graph.node:
        value = [a.t for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR]
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value and node.output[0] not in keep:
            note(key("constant", value[0]), node.output[0])
    if not alias:
        return 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    kept_nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output and n.output[0] in alias)]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    kept = [t for t in graph.initializer if t.name not in alias]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(alias)


def fold_shape_arithmetic(model: onnx.ModelProto) -> dict[str, int]:
    """Folds `model` in place; returns how many inputs were replaced, by kind."""
    inference = _inferred(model)
    graph = model.graph
    produced = {o: n for n in graph.node for o in n.output}
    fixed = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    constants: dict[tuple, str] = {}
    added = []
    replaced: collections.Counter = collections.Counter()

    def constant(values: list[int], dtype, scalar: bool) -> str:
        key = (tuple(values), np.dtype(dtype).str, scalar)
        if key not in constants:
            name = f"folded_shape_{len(constants)}"
            added.append(numpy_helper.from_array(np.array(values[0] if scalar else values, dtype=dtype), name))
            constants[key] = name
        return constants[key]

    for node in graph.node:
        for index, name in enumerate(node.input):
            if not name or name in fixed or name not in produced or name not in inference.sympy_data_:
                continue
            if produced[name].op_type == "Constant":
                continue
            value = inference.sympy_data_[name]
            scalar = not isinstance(value, list)
            values = [value] if scalar else list(value)
            ints = [_as_int(v) for v in values]
            info = inference.known_vi_.get(name)
            elem = info.type.tensor_type.elem_type if info is not None else onnx.TensorProto.INT64
            dtype = helper.tensor_dtype_to_np_dtype(elem)
            if all(i is not None for i in ints):
                node.input[index] = constant(ints, dtype, scalar)
                replaced["value"] += 1
                continue
            source = _dims(inference, node.input[0])
            if scalar or index != 1 or source is None:
                continue
            if node.op_type == "Reshape" and not any(a.name == "allowzero" and a.i for a in node.attribute):
                target = _reshape_target(values, ints, source)
                kind = "reshape"
            elif node.op_type == "Expand":
                target = _expand_target(values, ints, source)
                kind = "expand"
            else:
                continue
            if target is not None:
                node.input[index] = constant(target, np.int64, False)
                replaced[kind] += 1
    graph.initializer.extend(added)
    _remove_dead(graph)
    return dict(replaced)


def verify_same(original: Path, folded: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """Runs both graphs on ONNX Runtime's CPU provider and requires identical outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    a = ort.InferenceSession(str(original), options, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(folded), options, providers=["CPUExecutionProvider"])
    for feed in feeds:
        for out, x, y in zip(a.get_outputs(), a.run(None, feed), b.run(None, feed)):
            if x.shape != y.shape or not np.array_equal(x, y):
                raise SystemExit(f"folding the shape arithmetic changed {out.name}: {x.shape} vs {y.shape}")


def fold_file(path: Path, feeds: list[dict[str, np.ndarray]]) -> str:
    """Folds the graph at `path` in place, checked against the unfolded graph on `feeds`. Weights
    in external data files stay where they are (the folded graph is written beside them)."""
    model = onnx.load(path, load_external_data=False)
    before = len(model.graph.node)
    replaced = fold_shape_arithmetic(model)
    shared = share_identical_constants(model)
    folded = path.with_name(path.stem + ".folded.onnx")
    onnx.save(model, folded)
    try:
        verify_same(path, folded, feeds)
        folded.replace(path)
    finally:
        folded.unlink(missing_ok=True)
    return (f"shape arithmetic folded: {before} -> {len(model.graph.node)} nodes ({replaced}); "
            f"{shared} duplicate constants shared")
