"""`finetune`: a model directory plus labelled data in, a fine-tuned classifier (the teacher) out."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoModelForSequenceClassification, set_seed
from transformers.utils import logging as transformers_logging

from tinyship.compress.config import FinetuneConfig, settings
from tinyship.compress.tasks import TASKS, describe, metrics, weakness
from tinyship.compress.training import (
    PadCollator,
    check_output,
    default_base_model,
    hf_tokenizer,
    prepare_checkpoints,
    remove_checkpoints,
    run_trainer,
    save_model,
    steps_per_epoch,
    training_epochs,
)
from tinyship.runtime.data import load_examples
from tinyship.runtime.files import check_model_dir

log = logging.getLogger(__name__)


def finetune(config: FinetuneConfig, callbacks: list | None = None) -> Path:
    """Fine-tune config.model (default: the built-in MiniLM-L6) for sequence classification; returns the saved
    directory, whose weights are the best checkpoint's by validation accuracy. callbacks: extra transformers
    TrainerCallbacks."""
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
    log.info(f"fine-tuning {model_dir} with a new {len(names)}-label head {names} on {train_set.source}: "
             f"{len(train_set)} examples")
    checkpoints = prepare_checkpoints(out, config)
    classification = TASKS["classification"]
    epochs = training_epochs(config.epochs, steps_per_epoch(len(train_set), config), config)
    trainer = run_trainer(
        model,
        config,
        checkpoints,
        epochs,
        classification.encode(train_set, tokenizer, config.data.max_length),
        classification.encode(validation_set, tokenizer, config.data.max_length),
        data_collator=PadCollator({"input_ids": tokenizer.pad_token_id}),
        compute_metrics=metrics(classification),
        callbacks=callbacks,
        logging_dir=out.parent / f"{out.name}.logs",
        best=(classification.metric, True),
    )
    validation = trainer.evaluate()
    log.info(f"teacher on validation ({validation_set.source}): {describe(validation)}")
    if weak := weakness(validation):
        log.warning(f"the teacher is {weak}")
    stage = {"config": settings(config), "epochs": epochs, "steps": trainer.state.global_step,
             "best_checkpoint_step": trainer.state.best_global_step, "validation": validation}
    save_model(trainer.model, tokenizer, out, stage)
    remove_checkpoints(checkpoints)
    return out


class quiet_transformers:
    """Silence transformers' warnings for a block (e.g. the expected 'newly initialized head' notice)."""

    def __enter__(self):
        self.verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()

    def __exit__(self, *exc):
        transformers_logging.set_verbosity(self.verbosity)
