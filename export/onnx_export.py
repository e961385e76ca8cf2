"""PyTorch model directory -> ONNX (optimum's exporter, torch.onnx where optimum lacks the architecture), and the
parity check of every output against PyTorch over a grid of batch sizes, lengths and padding."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from tinyship.compress.pruning import load_model as load_pruned
from tinyship.compress.tasks import HEADS, Task, task_of
from tinyship.compress.tinyship_pruned import read_config
from tinyship.runtime.bundle import POSITION_OFFSET
from tinyship.runtime.errors import TinyshipError

log = logging.getLogger(__name__)

PARITY_BATCHES = (1, 3, 8)
PARITY_LENGTHS = (1, 17, 128)  # and the model's maximum


def load_model(model_dir: Path) -> tuple[torch.nn.Module, Task]:
    """The model with its task head, in eval mode, and its task (from the config's architecture)."""
    config = read_config(model_dir)
    try:
        task = task_of(config)
    except TinyshipError:
        raise TinyshipError(
            f"{model_dir} is a {', '.join(config.architectures or ['model without a task head'])}: tinyship exports "
            f"models with a task head ({', '.join('*' + h for h in HEADS)}); fine-tune or distil it first"
        ) from None
    try:
        model = load_pruned(model_dir)  # plain, or pruned with layers of their own widths
    except ValueError as e:  # an architecture this transformers does not know
        raise TinyshipError(f"cannot load {model_dir}: {e}") from None
    return model.eval(), task


def max_positions(config) -> int:
    """The longest input the model's position embeddings cover."""
    return config.max_position_embeddings - POSITION_OFFSET.get(config.model_type, 0)


def to_onnx(model, task: Task, out_dir: Path, opset: int, exporter: str = "auto") -> Path:
    """Export with dynamic batch and sequence axes; returns the .onnx path."""
    from transformers.utils import logging

    out_dir.mkdir(parents=True, exist_ok=True)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # optimum passes transformers a deprecated argument; the warning is not ours to fix
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about constant masks are expected and harmless
            if exporter in ("auto", "optimum"):
                try:
                    return _optimum_export(model, task, out_dir, opset)
                except ValueError as e:
                    if exporter == "optimum" or "not supported" not in str(e) and "unsupported" not in str(e):
                        raise TinyshipError("optimum cannot export this "
                                            f"{model.config.model_type} model: {e}") from None
                    log.info(f"optimum has no ONNX config for {model.config.model_type}: exporting with torch.onnx")
            try:
                return _torch_export(model, out_dir, opset)
            except Exception as e:  # torch.onnx raises many kinds of errors for graphs it cannot trace
                raise TinyshipError(
                    f"cannot export this {model.config.model_type} model: torch.onnx failed ({str(e).splitlines()[0]}) "
                    f"and optimum's exporter supports {', '.join(optimum_model_types(task))} for {task.name}"
                ) from None
    finally:
        logging.set_verbosity(verbosity)


def optimum_model_types(task: Task) -> list[str]:
    """The model types optimum's ONNX exporter handles for a task."""
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the exporter's configs)
    from optimum.exporters.tasks import TasksManager

    return sorted(TasksManager.get_supported_model_type_for_task(task.exporter_task, exporter="onnx"))


def _optimum_export(model, task: Task, out_dir: Path, opset: int) -> Path:
    from optimum.exporters.onnx import onnx_export_from_model

    onnx_export_from_model(model, out_dir, opset=opset, task=task.exporter_task, do_validation=False,
                           no_post_process=True)
    return out_dir / "model.onnx"


def _torch_export(model, out_dir: Path, opset: int) -> Path:
    """torch.onnx's TorchScript exporter, inputs in the order forward() takes them."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
    ids = torch.full((2, 8), 1000)
    example = {n: ids if n == "input_ids" else torch.ones_like(ids) if n == "attention_mask" else torch.zeros_like(ids)
               for n in inputs}
    with torch.inference_mode():
        outputs = [k for k, v in model(**example).items() if torch.is_tensor(v)]
    axes = {0: "batch_size", 1: "sequence_length"}
    path = out_dir / "model.onnx"
    torch.onnx.export(model, (), str(path), kwargs=example, input_names=inputs, output_names=outputs,
                      dynamic_axes={n: axes for n in inputs + outputs}, opset_version=opset, dynamo=False)
    return path


def parity_inputs(config, input_names: list[str], seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Random token ids at batch 1, 3 and 8 and lengths 1, 17, 128 and the model's maximum, without padding and
    with rows padded to different real lengths, keyed like "b3_s17_padded"."""
    rng = np.random.default_rng(seed)
    longest = max_positions(config)
    lengths = sorted({n for n in PARITY_LENGTHS if n <= longest} | {longest})
    shapes = {}
    for batch in PARITY_BATCHES:
        for length in lengths:
            for padded in (False, True) if length > 1 else (False,):
                ids = rng.integers(min(1000, config.vocab_size - 1), config.vocab_size, (batch, length))
                mask = np.ones_like(ids)
                if padded:  # real lengths from the full length (three quarters at batch 1) down to half of it
                    keep = np.linspace(length if batch > 1 else length * 3 // 4, max(1, length // 2), batch).round()
                    for row, real in enumerate(keep.astype(int)):
                        mask[row, real:] = 0
                feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
                shapes[f"b{batch}_s{length}{'_padded' if padded else ''}"] = {n: feed[n] for n in input_names}
    return shapes


def check_parity(model, onnx_path: Path, atol: float) -> dict[str, float]:
    """Largest |ONNX - PyTorch| difference over every output, per input shape; raises past atol."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    diffs = {}
    for shape, feed in parity_inputs(model.config, names).items():
        produced = session.run(None, feed)
        with torch.inference_mode():
            expected = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
        diffs[shape] = max(float(np.abs(p - expected[name].numpy()).max()) for name, p in zip(outputs, produced))
    worst = max(diffs, key=diffs.get)
    if diffs[worst] > atol:
        failing = {shape: f"{d:.1e}" for shape, d in diffs.items() if d > atol}
        raise TinyshipError(
            f"ONNX outputs differ from PyTorch by up to {diffs[worst]:.2e} (allowed {atol:.0e}) at {failing}: "
            "the bundle was not written"
        )
    return diffs
