"""The tasks tinyship knows, each declared once: compress trains for them, export writes their bundles and the
runtime serves them. Adding a task is one entry here, its predictor, and its training functions in
tinyship.compress.tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tinyship.runtime.data import load_examples, load_scores, load_span_examples, load_token_examples
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.predictor import Predictor, TextClassifier, TextRegressor
from tinyship.runtime.question_answering import QuestionAnswerer
from tinyship.runtime.token_classification import TokenClassifier


@dataclass(frozen=True)
class TaskSpec:
    name: str  # tinyship's name: --task, stage files, recipes
    bundle_task: str  # a bundle manifest's "task"
    exporter_task: str  # optimum's ONNX export task
    head: str  # the transformers Auto class of its models
    load: Callable  # (DataConfig, split, label names) -> its examples
    predictor: type[Predictor]  # what the runtime serves its bundles with
    metric: str
    lower_is_better: bool = False  # of the metric
    labelled: bool = True  # its models name their classes (config id2label) and its bundles list them
    per_sequence: bool = True  # one output row per input, not one per token
    outputs: tuple[str, ...] = ("logits",)  # the model's outputs, in order

    @property
    def architecture_suffix(self) -> str:
        """How its models' architectures end (AutoModelForTokenClassification: ForTokenClassification)."""
        return self.head.removeprefix("AutoModel")

    def truncation(self, max_length: int) -> dict:
        """How inputs over max_length tokens are cut, in training as at serving time."""
        return self.predictor.default_truncation(max_length)


TASKS = {spec.name: spec for spec in (
    TaskSpec("classification", "text-classification", "text-classification", "AutoModelForSequenceClassification",
             load_examples, TextClassifier, "accuracy"),
    TaskSpec("regression", "text-regression", "text-classification", "AutoModelForSequenceClassification",
             lambda config, split, names: load_scores(config, split), TextRegressor, "mse", lower_is_better=True,
             labelled=False),
    TaskSpec("token-classification", "token-classification", "token-classification",
             "AutoModelForTokenClassification", load_token_examples, TokenClassifier, "accuracy", per_sequence=False),
    TaskSpec("question-answering", "question-answering", "question-answering", "AutoModelForQuestionAnswering",
             lambda config, split, names: load_span_examples(config, split), QuestionAnswerer, "exact_match",
             labelled=False, per_sequence=False, outputs=("start_logits", "end_logits")),
)}
BUNDLE_TASKS = {spec.bundle_task: spec for spec in TASKS.values()}
LOWER_IS_BETTER = {spec.metric for spec in TASKS.values() if spec.lower_is_better}


def bundle_task(name: str, where: str = "the bundle") -> TaskSpec:
    """The task of a manifest's "task", or a TinyshipError naming those this runtime serves."""
    if name not in BUNDLE_TASKS:
        raise TinyshipError(f"{where} is a {name!r} bundle; this tinyship serves {', '.join(BUNDLE_TASKS)}")
    return BUNDLE_TASKS[name]
