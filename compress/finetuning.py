"""`finetune`: a model directory plus labelled data in, a fine-tuned classifier (the teacher) out."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForSequenceClassification, set_seed
from transformers.utils import logging

from tinyship.compress.config import FinetuneConfig, settings
from tinyship.compress.tasks import TASKS, metrics
from tinyship.compress.training import (
    PadCollator,
    check_output,
    default_base_model,
    hf_tokenizer,
    prepare_checkpoints,
    remove_checkpoints,
    run_trainer,
    save_model,
)
from tinyship.runtime.data import load_examples
from tinyship.runtime.files import check_model_dir


def finetune(config: FinetuneConfig, callbacks: list | None = None) -> Path:
    """Fine-tune config.model (default: the built-in MiniLM-L6) for sequence classification; returns the saved directory.
    callbacks: extra transformers TrainerCallbacks."""
    out = check_output(config)
    model_dir = check_model_dir(config.model or default_base_model())
    train_set = load_examples(config.data, "train")
    validation_set = load_examples(config.data, "validation", train_set.label_names)
    names = train_set.label_names
    set_seed(config.seed)  # the new head's initial weights, so that a rerun gives the same teacher
    with quiet_transformers():  # a new classification head is the point here, not a warning
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
            problem_type="single_label_classification",
            ignore_mismatched_sizes=True,  # a classifier with another label count gets a fresh head
        )
    tokenizer = hf_tokenizer(model_dir)
    print(f"fine-tuning {model_dir} with a new {len(names)}-label head {names} on {train_set.source}: {len(train_set)} examples")
    checkpoints = prepare_checkpoints(out, config)
    classification = TASKS["classification"]
    trainer = run_trainer(
        model,
        config,
        checkpoints,
        config.epochs,
        classification.encode(train_set, tokenizer, config.data.max_length),
        classification.encode(validation_set, tokenizer, config.data.max_length),
        data_collator=PadCollator({"input_ids": tokenizer.pad_token_id}),
        compute_metrics=metrics(classification),
        callbacks=callbacks,
        logging_dir=out.parent / f"{out.name}.logs",
    )
    save_model(trainer.model, tokenizer, out, {"config": settings(config), "validation": trainer.evaluate()})
    remove_checkpoints(checkpoints)
    return out


class quiet_transformers:
    """Silence transformers' warnings for a block (e.g. the expected 'newly initialized head' notice)."""

    def __enter__(self):
        self.verbosity = logging.get_verbosity()
        logging.set_verbosity_error()

    def __exit__(self, *exc):
        logging.set_verbosity(self.verbosity)
