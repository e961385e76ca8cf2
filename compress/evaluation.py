"""A model's validation metrics in PyTorch: the task's metric, and for classification tasks macro-F1 and the
majority-class baseline beside accuracy (tinyship.compress.tasks.summarize), keyed eval_* as the Trainer keys them."""

from __future__ import annotations

from pathlib import Path

import torch

from tinyship.compress.pruning import load_model
from tinyship.compress.states import logits_of
from tinyship.compress.tasks import Task, summarize, task_of
from tinyship.compress.tinyship_pruned import read_config
from tinyship.compress.training import PadCollator, hf_tokenizer
from tinyship.runtime.data import DataConfig
from tinyship.runtime.files import check_model_dir


def evaluate_rows(model, task: Task, rows: list[dict], pad_ids: dict[str, int], batch_size: int = 64) -> dict:
    """The model's metrics over encoded rows (a teacher's own ids, keys teacher_..., are left out)."""
    collator = PadCollator(pad_ids)
    model.eval()

    def batches():
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = collator([{k: v for k, v in row.items() if not k.startswith("teacher_") and k != "index"}
                                  for row in rows[start : start + batch_size]])
                labels = batch.pop("labels").numpy()
                yield logits_of(model(**batch)).float().numpy(), labels

    return {f"eval_{name}": value for name, value in summarize(task, batches()).items()}


def validate(model_dir: str | Path, data: DataConfig, split: str = "validation") -> dict:
    """A fine-tuned model directory's (plain or pruned) metrics on a split of data, e.g. a teacher one is given."""
    model_dir = check_model_dir(model_dir)
    config = read_config(model_dir)
    task = task_of(config)
    names = [config.id2label[i] for i in range(config.num_labels)] if task.classes else []
    tokenizer = hf_tokenizer(model_dir)
    return score(load_model(model_dir), tokenizer, task, task.load(data, split, names), data.max_length)


def score(model, tokenizer, task: Task, examples, max_length: int) -> dict:
    """A model's metrics (keyed eval_*) on examples its task loaded, encoded with tokenizer."""
    rows = task.encode(examples, tokenizer, max_length)
    return evaluate_rows(model, task, rows, {"input_ids": tokenizer.pad_token_id, "labels": -100})
