"""This CPU's ceilings and where a model's time goes: onnxruntime's GEMM throughput (int8 and fp32), measured in a
process without torch (`python -m benchmarks.lab.ceilings`), and an operator profile of an ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.lab.fresh import in_fresh_process, payload, report
from tinyship.runtime.bench import timed


def ceilings_in_fresh_process(repeat: int, timeout_s: float = 600) -> dict:
    """gemm_ceilings() in a fresh process: onnxruntime's threads slow down in a process that has imported torch."""
    return in_fresh_process("benchmarks.lab.ceilings", {"repeat": repeat}, "the GEMM ceilings", timeout_s)


GEMM_OPS = {"int8_gops": "u8s8 MatMulInteger, constant int8 weights", "fp32_gflops": "fp32 MatMul"}


def gemm_graphs(m: int, k: int, n: int) -> dict[str, tuple[bytes, np.ndarray, int]]:
    """The two GEMMs that bound a Transformer's speed (GEMM_OPS), each an (m x k) input times constant (k x n)
    weights: serialized ONNX (IR version 9, which onnxruntime-web reads too), a random input, and the operations of
    one product (2 m k n)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graphs = {
        "int8_gops": (TensorProto.UINT8, helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"]),
                      [numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "b"),
                       numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zero"),
                       numpy_helper.from_array(np.array(0, dtype=np.int8), "b_zero")],
                      TensorProto.INT32, rng.integers(0, 256, (m, k), dtype=np.uint8)),
        "fp32_gflops": (TensorProto.FLOAT, helper.make_node("MatMul", ["a", "b"], ["y"]),
                        [numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "b")],
                        TensorProto.FLOAT, rng.standard_normal((m, k)).astype(np.float32)),
    }
    built = {}
    for name, (in_type, node, weights, out_type, a) in graphs.items():
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info("a", in_type, [m, k])],
                                  [helper.make_tensor_value_info("y", out_type, [m, n])], weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
        built[name] = (model.SerializeToString(), a, 2 * m * k * n)
    return built


def gemm_throughput(graphs: dict[str, tuple[bytes, np.ndarray, int]], threads: int, repeat: int) -> dict[str, float]:
    """Each graph's operations per second in onnxruntime on `threads` threads, in G(FL)OP/s (median of repeat)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    results = {}
    for name, (model, a, operations) in graphs.items():
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        ms = timed(lambda: session.run(None, {"a": a}), 3, repeat)["median_ms"]
        results[name] = operations / (ms / 1e3) / 1e9
    return results


def gemm_ceilings(threads=(1, 2), repeat: int = 20, size: int = 1024) -> dict:
    """onnxruntime's GEMM throughput on this CPU, size^3 products (GEMM_OPS), per thread count. Imports neither torch
    nor transformers."""
    graphs = gemm_graphs(size, size, size)
    return {f"{name}_{count}_thread{'s' if count > 1 else ''}": value for count in threads
            for name, value in gemm_throughput(graphs, count, repeat).items()}


def op_profile(path: Path, disabled_optimizers: list[str], tokens: int = 128, runs: int = 50) -> dict[str, float]:
    """Milliseconds per run spent in each operator type at batch 1, `tokens` tokens, 1 thread (onnxruntime's
    profiler)."""
    import tempfile

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "tinyship-profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled_optimizers)
    ids = np.random.default_rng(0).integers(1000, 20000, (1, tokens))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feed = {i.name: feed[i.name] for i in session.get_inputs()}
    for _ in range(runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    spent: dict[str, float] = {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            spent[op] = spent.get(op, 0.0) + event["dur"] / 1e3 / runs
    trace.unlink()
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))


if __name__ == "__main__":
    report(gemm_ceilings(**payload()))
