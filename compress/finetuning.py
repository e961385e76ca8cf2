"""`finetune`: a model directory plus labelled data in, a fine-tuned classifier (the teacher) out."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForSequenceClassification, set_seed
from transformers.utils import logging

from tinyship.compress.config import FinetuneConfig
from tinyship.compress.training import check_output, default_base_model, hf_tokenizer, train
from tinyship.runtime.data import load_examples
from tinyship.runtime.files import check_model_dir


def finetune(config: FinetuneConfig) -> Path:
    """Fine-tune config.model (default: the built-in MiniLM-L6) for sequence classification; returns the saved directory."""
    check_output(config)
    model_dir = check_model_dir(config.model or default_base_model())
    train_set = load_examples(config.data, "train")
    validation_set = load_examples(config.data, "validation", train_set.label_names)
    names = train_set.label_names
    set_seed(config.seed)  # the new head's initial weights, so that a rerun gives the same teacher
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # a new classification head is the point here, not a warning
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
            problem_type="single_label_classification",
            ignore_mismatched_sizes=True,  # a classifier with another label count gets a fresh head
        )
    finally:
        logging.set_verbosity(verbosity)
    print(f"fine-tuning {model_dir} with a new {len(names)}-label head {names} on {train_set.source}: {len(train_set)} examples")
    return train(model, hf_tokenizer(model_dir), config, train_set, validation_set)
