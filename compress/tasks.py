"""The tasks a teacher can be distilled for (declared in tinyship.runtime.tasks), with what training adds: how each
encodes its data, compares a student's logits with the teacher's (`prediction`) and with the true labels
(`labels`), and scores predictions.

Classification tasks are scored beside their majority-class baseline (the accuracy of always predicting the most
frequent label) and macro-F1, so that a model that learned nothing but the label shares is seen for what it is.

Logits are [batch, classes] for classification (one column for regression), [batch, tokens, classes] for
token classification, and [batch, tokens, 2] (start and end) for extractive QA; mask is the attention mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np
import torch.nn.functional as F

from tinyship.compress.config import MIN_MARGIN
from tinyship.compress.losses import LOSSES
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.tasks import TASKS as SPECS
from tinyship.runtime.tasks import TaskSpec


@dataclass(frozen=True, kw_only=True)
class Task(TaskSpec):
    """A task's declaration and its training functions. per_sequence tasks have their teacher's logits cached."""

    encode: Callable  # (examples, tokenizer, max_length) -> one dict of ids and "labels" per model input
    prediction: Callable  # (student logits, teacher logits, mask, temperature) -> loss
    labels: Callable  # (student logits, labels) -> loss
    score: Callable  # (logits, labels) as numpy -> (sum, count) of the metric
    classes: Callable | None = None  # (logits, labels) as numpy -> (predicted, true) class ids, flat; None: no classes


def _task(name: str, **functions) -> Task:
    spec = SPECS[name]
    return Task(**{f.name: getattr(spec, f.name) for f in fields(TaskSpec)}, **functions)


def _encode_texts(examples, tokenizer, max_length: int) -> list[dict]:
    encoded = tokenizer(examples.texts, examples.text_pairs, truncation=True, max_length=max_length)
    return [{**{k: encoded[k][i] for k in encoded.keys()}, "labels": label} for i, label in enumerate(examples.labels)]


def _encode_tokens(examples, tokenizer, max_length: int) -> list[dict]:
    """Words to pieces; each word's tag goes on its first piece, the other pieces get -100 (ignored)."""
    encoded = tokenizer(examples.words, is_split_into_words=True, truncation=True, max_length=max_length)
    rows = []
    for i, tags in enumerate(examples.tags):
        words, previous, labels = encoded.word_ids(i), None, []
        for word in words:
            labels.append(-100 if word is None or word == previous else tags[word])
            previous = word
        rows.append({**{k: encoded[k][i] for k in encoded.keys()}, "labels": labels})
    return rows


def _encode_spans(examples, tokenizer, max_length: int) -> list[dict]:
    """Question and context, the context cut into windows with a stride of a quarter window; labels are the
    answer's first and last token in a window, or (0, 0) (the first token) where the window lacks it."""
    windows = SPECS["question-answering"].truncation(max_length)
    encoded = tokenizer(examples.questions, examples.contexts, truncation=windows["strategy"], max_length=max_length,
                        stride=windows["stride"], return_overflowing_tokens=True, return_offsets_mapping=True)
    keys = [k for k in encoded.keys() if k not in ("offset_mapping", "overflow_to_sample_mapping")]
    rows = []
    for f, example in enumerate(encoded["overflow_to_sample_mapping"]):
        text, start = examples.answers[example]
        end = start + len(text)
        offsets, sequence = encoded["offset_mapping"][f], encoded.sequence_ids(f)
        context = [k for k, s in enumerate(sequence) if s == 1]
        span = (0, 0)
        if context and offsets[context[0]][0] <= start and offsets[context[-1]][1] >= end:
            first = next(k for k in context if offsets[k][1] > start)
            last = next(k for k in reversed(context) if offsets[k][0] < end)
            span = (first, last)
        rows.append({**{k: encoded[k][f] for k in keys}, "labels": list(span)})
    return rows


def _span_prediction(student, teacher, mask, temperature):
    """Soft cross-entropy of the start and of the end distributions over the real tokens, averaged."""
    padding = ~mask.bool()[..., None]
    student, teacher = student.masked_fill(padding, -1e4), teacher.masked_fill(padding, -1e4)
    return sum(LOSSES["prediction"](student[..., k], teacher[..., k], temperature) for k in (0, 1)) / 2


def _span_labels(student, labels):
    return (F.cross_entropy(student[..., 0], labels[:, 0]) + F.cross_entropy(student[..., 1], labels[:, 1])) / 2


def _token_prediction(student, teacher, mask, temperature):
    real = mask.bool()
    return LOSSES["prediction"](student[real], teacher[real], temperature)


def _classes(logits, labels):
    return logits.argmax(-1).reshape(-1), labels.reshape(-1)


def _tags(logits, labels):
    """The predicted and true tag of each tagged token (a word's first piece; the others carry -100)."""
    tagged = labels != -100
    return logits.argmax(-1)[tagged], labels[tagged]


def _matching(classes: Callable) -> Callable:
    """A score (correct, count) from a task's class ids."""

    def score(logits, labels):
        predicted, true = classes(logits, labels)
        return float((predicted == true).sum()), float(true.size)

    return score


def _exact_spans(logits, labels):
    predicted = logits.argmax(1)  # [batch, 2]: the best start and end token
    return float((predicted == labels).all(-1).sum()), float(len(labels))


def _squared_error(logits, labels):
    return float(((logits[:, 0] - labels) ** 2).sum()), float(len(labels))


TASKS = {
    "classification": _task("classification", encode=_encode_texts, labels=LOSSES["labels"],
                            prediction=lambda s, t, mask, temp: LOSSES["prediction"](s, t, temp),
                            score=_matching(_classes), classes=_classes),
    "regression": _task("regression", encode=_encode_texts, labels=LOSSES["labels"],
                        prediction=lambda s, t, mask, temp: LOSSES["prediction_mse"](s, t), score=_squared_error),
    "token-classification": _task("token-classification", encode=_encode_tokens, prediction=_token_prediction,
                                  labels=LOSSES["labels"], score=_matching(_tags), classes=_tags),
    "question-answering": _task("question-answering", encode=_encode_spans, prediction=_span_prediction,
                                labels=_span_labels, score=_exact_spans),
}
HEADS = list(dict.fromkeys(t.architecture_suffix for t in TASKS.values()))  # task models' class suffixes


def task_of(config) -> Task:
    """The task of a fine-tuned model, from its config's architecture (its head); a sequence classifier with a
    single output, or problem_type regression, is a regression."""
    regression = config.problem_type == "regression" or config.num_labels == 1
    for architecture in config.architectures or []:
        heads = [t for t in TASKS.values() if architecture.endswith(t.architecture_suffix)]
        if heads:
            return next((t for t in heads if (t.name == "regression") == regression), heads[0])
    raise TinyshipError(
        f"the teacher is a {', '.join(config.architectures or ['model without an architecture'])}, not a fine-tuned "
        f"model of a task tinyship distils ({', '.join(TASKS)}): fine-tune it first (`tinyship finetune`), "
        "or distil it with --stage general"
    )


def metrics(task: Task):
    """compute_metrics for the Trainer: summarize() over an evaluation."""

    def compute(prediction) -> dict:
        return summarize(task, [(np.asarray(prediction.predictions), np.asarray(prediction.label_ids))])

    return compute


def summarize(task: Task, batches) -> dict:
    """The task's metric over (logits, labels) batches as numpy; for classification tasks class_metrics() instead
    (accuracy, macro-F1 and the majority-class baseline; per token for token classification). QA and regression
    have no classes to count: their metric alone."""
    if task.classes is None:
        total = count = 0.0
        for logits, labels in batches:
            found, seen = task.score(logits, labels)
            total, count = total + found, count + seen
        return {task.metric: total / max(count, 1)}
    pairs = [task.classes(logits, labels) for logits, labels in batches]
    return class_metrics(np.concatenate([p for p, _ in pairs]), np.concatenate([t for _, t in pairs]))


def macro_f1(predicted, labels) -> float:
    """The mean F1 = 2TP / (2TP + FP + FN) over the classes that occur in labels or predictions."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    classes = np.union1d(predicted, labels)
    if not classes.size:
        return 0.0
    return float(np.mean([2 * np.sum((predicted == c) & (labels == c)) / (np.sum(predicted == c) + np.sum(labels == c))
                          for c in classes]))


def class_metrics(predicted, labels) -> dict:
    """Accuracy and macro-F1 of predicted class ids, beside those of always predicting the most frequent label
    (its accuracy is that label's share: the majority-class baseline); `examples` counts the labels."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    return {"accuracy": float(np.mean(predicted == labels)), "macro_f1": macro_f1(predicted, labels),
            **majority_baseline(labels), "examples": int(labels.size)}


def majority_baseline(labels) -> dict:
    """The accuracy (the most frequent label's share) and macro-F1 of always predicting the most frequent label,
    and that label's id."""
    labels = np.asarray(labels).astype(np.int64)
    if not labels.size:
        raise TinyshipError("no labelled examples to score: the evaluated split is empty")
    majority = int(np.bincount(labels).argmax())
    always = np.full_like(labels, majority)
    return {"majority_baseline": float(np.mean(always == labels)), "majority_macro_f1": macro_f1(always, labels),
            "majority_label": majority}


def weakness(validation: dict) -> str | None:
    """Why a classifier's metrics (class_metrics(), keys optionally prefixed eval_) are not clearly better than
    always predicting the most frequent label (CLEARLY_BETTER), or None when they are or the task has no classes."""
    m = {key.removeprefix("eval_"): value for key, value in validation.items()}
    if "majority_baseline" not in m:
        return None
    share = m["majority_baseline"]
    needed = share + max(MIN_MARGIN, 2 * math.sqrt(share * (1 - share) / m["examples"]))
    if m["accuracy"] > needed and m["macro_f1"] > m["majority_macro_f1"]:
        return None
    return (f"not clearly better than always predicting the most frequent label: "
            f"accuracy {m['accuracy']:.3f} against a majority-class baseline of {share:.3f} (clearly better is above "
            f"{needed:.3f} on {m['examples']} examples), macro-F1 {m['macro_f1']:.3f} against the majority "
            f"predictor's {m['majority_macro_f1']:.3f}")


def describe(validation: dict) -> str:
    """Metrics in a line: the task's metric, and for classification macro-F1 and the majority-class baseline."""
    m = {key.removeprefix("eval_"): value for key, value in validation.items()}
    if "majority_baseline" not in m:
        return ", ".join(f"{k} {v:.4f}" for k, v in m.items() if k in {t.metric for t in TASKS.values()})
    return (f"accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (majority-class baseline: accuracy "
            f"{m['majority_baseline']:.4f}, macro-F1 {m['majority_macro_f1']:.4f}; {m['examples']} examples)")
