"""Small hand-built ONNX graphs for execution-provider tests (no torch needed: `onnx` only).

  unsupported_op.onnx  x [2,2] -> Relu -> Det -> y []: OpenVINO takes the Relu but not Det, so
                       with CPU fallback the graph is split across providers, and with
                       `session.disable_cpu_ep_fallback` the session must fail to load.

  python make_probe_models.py --out ../fixtures/probe
"""

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Det", ["r"], ["y"])],
        "unsupported_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeinfer")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, args.out / "unsupported_op.onnx")
    x = np.array([[2.0, -1.0], [1.0, 3.0]], dtype=np.float32)
    np.save(args.out / "unsupported_op.x.npy", x)
    np.save(args.out / "unsupported_op.y.npy", np.array(np.linalg.det(np.maximum(x, 0)), dtype=np.float32))


if __name__ == "__main__":
    main()
