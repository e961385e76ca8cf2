"""`distill`: the TinyBERT method (Jiao et al. 2019) on transformers' Trainer.

A distillation is a list of phases, each minimising a weighted sum of named losses for its own epochs:
task distillation matches embeddings, hidden states and attention maps first, then predictions;
general distillation matches the intermediate states on an unlabelled, streamed corpus. Every phase
checkpoints; a rerun of an interrupted command resumes in the phase and step where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_model
from safetensors.torch import save_model as save_weights

from tinyship.compress.config import CACHE_TEACHER_RATIO, INTERMEDIATE_LOSSES, DistillConfig, Phase, settings
from tinyship.compress.corpus import TextCorpus, corpus_lines, corpus_sentences
from tinyship.compress.evaluation import evaluate_rows
from tinyship.compress.losses import LOSSES
from tinyship.compress.states import States, forward_states, logits_of
from tinyship.compress.students import build_student, load_teacher
from tinyship.compress.tasks import Task, describe, metrics, summarize
from tinyship.compress.training import (
    PadCollator,
    SeededTrainer,
    check_output,
    default_base_model,
    hf_tokenizer,
    is_main_process,
    parameter_count,
    prepare_checkpoints,
    remove_checkpoints,
    run_trainer,
    save_model,
    steps_per_epoch,
    training_epochs,
)
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import check_model_dir, sha256_file

log = logging.getLogger(__name__)

TERMS = (*INTERMEDIATE_LOSSES, "prediction", "labels")  # what a phase may name
ALIGNMENT_SAMPLE = 1000  # training texts on which the teacher's and the student's tokenizers are compared


class Student(torch.nn.Module):
    """The student in training, with learnable projections (one per distilled state) from its width to the
    teacher's when they differ. Returns the States the phase's losses need."""

    accepts_loss_kwargs = False  # the loss is a batch mean: the Trainer scales it for gradient accumulation

    def __init__(self, model, teacher_width: int, layers: int, phase: Phase, attention: str):
        super().__init__()
        self.model = model
        self.intermediate = bool(set(phase.losses) & set(INTERMEDIATE_LOSSES))
        self.attention = attention if "attention" in phase.losses else None
        width = model.config.hidden_size
        self.projections = None
        if self.intermediate and width != teacher_width:
            self.projections = torch.nn.ModuleList(torch.nn.Linear(width, teacher_width) for _ in range(layers + 1))

    def forward(self, **inputs) -> States:
        if not self.intermediate:
            return States(logits_of(self.model(**inputs)))
        layers = range(1, self.model.config.num_hidden_layers + 1) if self.attention else ()
        return forward_states(self.model, inputs, layers, self.attention or "scores")


class DistillationTrainer(SeededTrainer):
    """A Trainer whose loss is the phase's weighted sum of distillation losses against a frozen teacher.
    The mean of each loss since the last log line is logged beside the total."""

    def __init__(self, *args, teacher, task: Task | None, phase: Phase, layer_map, attention, temperature,
                 cached_logits=None, teacher_bf16: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.teacher_bf16 = teacher_bf16
        self.task = task
        self.phase, self.layer_map, self.attention, self.temperature = phase, layer_map, attention, temperature
        self.cached_logits = cached_logits
        self.terms_seen: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels, index = inputs.pop("labels", None), inputs.pop("index", None)
        teacher_inputs = {k.removeprefix("teacher_"): inputs.pop(k) for k in list(inputs) if k.startswith("teacher_")}
        student = model(**inputs)
        teacher = self.teacher_states(teacher_inputs or inputs, index, "train" if model.training else "validation")
        mask = inputs.get("attention_mask")
        projections = getattr(getattr(model, "module", model), "projections", None)
        loss = 0.0
        for name, weight in self.phase.losses.items():
            term = getattr(self, f"{name}_loss")(student, teacher, mask, labels, projections)
            self.terms_seen.setdefault(name, []).append(term.item())
            loss = loss + weight * term
        return (loss, {"logits": student.logits}) if return_outputs else loss

    def teacher_states(self, inputs: dict, index, split: str) -> States | None:
        losses = set(self.phase.losses)
        intermediate = bool(losses & set(INTERMEDIATE_LOSSES))
        if not intermediate and "prediction" not in losses:
            return None
        if not intermediate and self.cached_logits is not None and index is not None:
            cached = self.cached_logits[split]
            return States(torch.from_numpy(cached[index.cpu().numpy()]).to(self.args.device))
        with torch.no_grad(), teacher_autocast(self.teacher_bf16, self.args.device.type):
            if intermediate:
                layers = sorted(set(self.layer_map)) if "attention" in losses else ()
                return forward_states(self.teacher, inputs, layers, self.attention).float()
            return States(logits_of(self.teacher(**inputs))).float()

    def embedding_loss(self, s: States, t: States, mask, labels, projections):
        return LOSSES["embedding"](s.hidden[0], t.hidden[0], mask, projections[0] if projections else None)

    def hidden_loss(self, s: States, t: States, mask, labels, projections):
        return sum(
            LOSSES["hidden"](s.hidden[m], t.hidden[n], mask, projections[m] if projections else None)
            for m, n in enumerate(self.layer_map, 1)
        )

    def attention_loss(self, s: States, t: States, mask, labels, projections):
        return sum(attention_distance(s.attention[m], t.attention[n], mask) for m, n in enumerate(self.layer_map, 1))

    def prediction_loss(self, s: States, t: States, mask, labels, projections):
        return self.task.prediction(s.logits, t.logits, mask, self.temperature)

    def labels_loss(self, s: States, t: States, mask, labels, projections):
        return self.task.labels(s.logits, labels)

    def log(self, logs: dict, *args, **kwargs):
        if "loss" in logs:
            logs.update({f"loss_{name}": round(float(np.mean(seen)), 6) for name, seen in self.terms_seen.items()})
            self.terms_seen = {}
        super().log(logs, *args, **kwargs)


def attention_distance(student: torch.Tensor, teacher: torch.Tensor, mask) -> torch.Tensor:
    """L_attn of one layer's [batch, heads, query, key] maps; when the head counts differ, of the maps averaged over
    each model's heads (there is no head-to-head correspondence to compare)."""
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(dim=1, keepdim=True), teacher.mean(dim=1, keepdim=True)
    return LOSSES["attention"](student, teacher, mask)


def distill(config: DistillConfig, callbacks: list | None = None) -> Path:
    """Distil config.teacher into a student by config.phases; returns the saved student directory. Each phase takes
    at least config.min_steps optimiser steps; one that predicts ends with its best checkpoint by validation metric.
    callbacks: extra transformers TrainerCallbacks."""
    out = check_output(config)
    teacher_dir = _teacher_dir(config)
    teacher, task = load_teacher(teacher_dir, config.stage)
    student, student_dir, layer_map = build_student(config, teacher, teacher_dir, task)
    teacher_tokenizer, tokenizer = hf_tokenizer(teacher_dir), hf_tokenizer(student_dir)
    separate = _tokenization(tokenizer) != _tokenization(teacher_tokenizer)  # then each model reads its own ids
    pad_ids = {"input_ids": tokenizer.pad_token_id, "teacher_input_ids": teacher_tokenizer.pad_token_id, "labels": -100}

    names = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)] if task else []
    train_data, eval_data, misaligned, source = _data(config, task, names, tokenizer,
                                                      teacher_tokenizer if separate else None)
    cache = _cache_teacher(config, teacher, student)
    if cache and task and not task.per_sequence:
        log.info(f"--cache-teacher: {task.name} logits vary in length per input and are not cached; "
                 "the teacher runs live")
    teacher_pad_ids = {**pad_ids, "input_ids": teacher_tokenizer.pad_token_id}
    engine, engine_record = (_teacher_engine(config, teacher, task, names, eval_data, teacher_pad_ids,
                                             teacher_tokenizer)
                             if cache and task and task.per_sequence else (None, None))
    phases = _usable_phases(config.phases, misaligned, config.stage)
    _describe_heads(teacher, student, phases)
    precision = teacher_precision(config.teacher_precision)
    teacher_bf16 = precision == "bf16"

    log.info(f"distilling {teacher_dir} ({len(teacher.base_model.encoder.layer)} layers, {_size(teacher)}) into a "
          f"{len(layer_map)}-layer student ({_size(student)}) on {source}; student layer m learns from teacher layer "
          f"{layer_map}" + (" (projected to the teacher's width)"
                            if student.config.hidden_size != teacher.config.hidden_size else ""))
    checkpoints = prepare_checkpoints(out, config)
    sized = hasattr(train_data, "__len__")
    per_epoch = steps_per_epoch(len(train_data) if sized else train_data.count(), config)
    record = []
    for number, phase in enumerate(phases, 1):
        log.info(f"phase {number}/{len(phases)}: {', '.join(f'{w:g}*{n}' for n, w in phase.losses.items())} "
                 f"for {phase.epochs:g} epochs")
        done = checkpoints / f"phase-{number}.safetensors"
        if done.is_file():
            load_model(student, done)
            with safe_open(done, "pt") as f:
                record.append(json.loads(f.metadata()["record"]))
            log.info(f"  done before: reusing {done}")
            continue
        epochs = training_epochs(phase.epochs, per_epoch, config)
        cached = None
        if cache and "prediction" in phase.losses and task and task.per_sequence:
            cached = {split: _cached_logits(engine or _torch_logits(teacher, teacher_pad_ids, teacher_bf16), rows,
                                            config, _logits_path(config, checkpoints, split, teacher_dir,
                                                                 engine_record, teacher_bf16, rows))
                      for split, rows in (("train", train_data), ("validation", eval_data))}
        wrapper = Student(student, teacher.config.hidden_size, len(layer_map), phase, config.attention)
        predicts = bool({"prediction", "labels"} & set(phase.losses))
        trainer = run_trainer(
            wrapper,
            config,
            checkpoints / f"phase-{number}",
            epochs,
            train_data,
            eval_data if predicts else None,
            trainer_class=DistillationTrainer,
            max_steps=-1 if sized else max(1, math.ceil(per_epoch * epochs)),
            logging_dir=out.parent / f"{out.name}.logs" / f"phase-{number}",
            data_collator=PadCollator(pad_ids),
            compute_metrics=metrics(task) if task else None,
            callbacks=callbacks,
            teacher=teacher,
            task=task,
            phase=phase,
            layer_map=layer_map,
            attention=config.attention,
            temperature=config.temperature,
            cached_logits=cached,
            teacher_bf16=teacher_bf16,
            best=(task.metric, not task.lower_is_better) if task else None,
        )
        record.append({"phase": number, "epochs": epochs, "steps": trainer.state.global_step,
                       "best_checkpoint_step": trainer.state.best_global_step,
                       "train_loss": trainer.state.log_history[-1].get("train_loss"),
                       "examples_per_second": trainer.state.log_history[-1].get("train_samples_per_second")})
        if is_main_process():
            save_weights(student, str(done) + ".tmp", metadata={"record": json.dumps(record[-1])})
            os.replace(str(done) + ".tmp", done)
        trainer.accelerator.wait_for_everyone()
    stage = {
        "config": settings(config),
        "teacher_sha256": weights_digest(teacher_dir),
        **({"student_sha256": weights_digest(student_dir)} if config.spec.directory else {}),
        "layer_map": layer_map,
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
        "tokenizers": ("same" if not separate else "different: prediction loss only" if misaligned
                       else "aligned by position"),
        **({"teacher_logits": engine_record} if engine_record else {}),
        "teacher_precision": precision,
        "phases": record,
    }
    if task:
        stage["task"] = task.name
        stage["validation"] = evaluate_rows(student, task, eval_data, pad_ids, config.batch_size * 2)
        log.info(f"student on validation: {describe(stage['validation'])}")
    save_model(student, tokenizer, out, stage)
    remove_checkpoints(checkpoints)
    return out


def teacher_precision(asked: str) -> str:
    """The precision the PyTorch teacher runs in: as asked, or for auto bf16 where the CPU has bf16 instructions
    (AVX-512 BF16, AMX), where bf16 autocast is about 3x faster than fp32; elsewhere it is slower."""
    if asked != "auto":
        return asked
    return "bf16" if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() else "fp32"


def teacher_autocast(bf16: bool, device_type: str = "cpu"):
    """The context every PyTorch teacher pass runs in: bf16 autocast when asked, else a no-op."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16)


def _teacher_dir(config: DistillConfig) -> Path:
    if config.teacher:
        return check_model_dir(config.teacher)
    if config.stage == "general":
        return check_model_dir(default_base_model())
    raise TinyshipError("no teacher: pass --teacher DIR, a fine-tuned model directory (e.g. from `tinyship finetune`)")


def _data(config: DistillConfig, task: Task | None, names: list[str], tokenizer, teacher_tokenizer) -> tuple:
    """(training set, validation set, why the tokenizers do not align by position or None, a description): the
    task's labelled data, or for general distillation the streamed corpus. teacher_tokenizer: the teacher's own,
    when it differs from the student's (each model then reads its own ids)."""
    if task is None:
        corpus = TextCorpus(config.corpus or "imdb", tokenizer, config.data.max_length, config.seed, teacher_tokenizer)
        misaligned = None
        if teacher_tokenizer:  # a sample of the corpus, read only when the two tokenizations differ
            windows = list(islice(corpus.windows(), ALIGNMENT_SAMPLE))
            texts = list(islice(corpus_lines(corpus.corpus), ALIGNMENT_SAMPLE))
            misaligned = _misalignment(texts, windows, tokenizer, teacher_tokenizer, config.data.max_length)
        return corpus, None, misaligned, f"corpus {corpus.corpus}"
    train_set = task.load(_training_data(config), "train", names)
    validation_set = task.load(config.data, "validation", names)
    if config.transfer:
        train_set = _with_transfer(config, task, train_set, validation_set)
    train_rows = _rows(task, train_set, tokenizer, teacher_tokenizer, config.data.max_length)
    misaligned = teacher_tokenizer and _misalignment(_texts(train_set), train_rows, tokenizer, teacher_tokenizer,
                                                     config.data.max_length)
    if misaligned and not task.per_sequence:
        raise TinyshipError(f"{task.name} compares logits token by token: the teacher's and the student's tokenizers "
                            f"must cut text into the same pieces ({misaligned}); "
                            "give the student the teacher's tokenizer")
    validation_rows = _rows(task, validation_set, tokenizer, teacher_tokenizer, config.data.max_length)
    train_data, eval_data = ([{**row, "index": i} for i, row in enumerate(rows)]  # the key of cached teacher logits
                             for rows in (train_rows, validation_rows))
    return train_data, eval_data, misaligned, f"{task.name} data {train_set.source}: {len(train_set)} examples"


def _with_transfer(config: DistillConfig, task: Task, train_set, validation_set):
    """The training set plus config.transfer_examples sentences of config.transfer, unlabelled (-100): the teacher's
    logits are their targets, the labels loss skips them. The texts the student is scored on are kept out."""
    if task.name != "classification" or train_set.text_pairs is not None:
        raise TinyshipError(f"transfer text teaches classifiers of single texts; this is {task.name}"
                            + (" of text pairs" if train_set.text_pairs is not None else "") + ": leave out --transfer")
    scored = set(validation_set.texts) | set(task.load(config.data, "test", train_set.label_names).texts)
    sentences = corpus_sentences(config.transfer, config.transfer_examples, config.seed, scored)
    log.info(f"transfer text: {len(sentences)} sentences of {config.transfer}, labelled by the teacher")
    return dataclasses.replace(train_set, texts=train_set.texts + sentences,
                               labels=train_set.labels + [-100] * len(sentences),
                               source=f"{train_set.source} + {len(sentences)} sentences of {config.transfer}")


def _training_data(config: DistillConfig):
    """The data whose train split is distilled on: the augmented file when given (all of it: setting its
    validation file keeps the loader from holding out a tenth), else the task data."""
    if not config.augmented:
        return config.data
    return dataclasses.replace(config.data, train_file=config.augmented, validation_file=config.augmented)


def _rows(task: Task, examples, tokenizer, teacher_tokenizer, max_length: int) -> list[dict]:
    """The task's encoded inputs and labels; with a teacher_tokenizer, the teacher's own ids too (keys teacher_...)."""
    rows = task.encode(examples, tokenizer, max_length)
    if teacher_tokenizer is None:
        return rows
    teacher_rows = task.encode(examples, teacher_tokenizer, max_length)
    if len(teacher_rows) != len(rows):  # QA windows cut differently: not aligned
        return [{**row, "teacher_input_ids": []} for row in rows]
    return [{**s, **{f"teacher_{k}": v for k, v in t.items() if k != "labels"}} for s, t in zip(rows, teacher_rows)]


def _tokenization(tokenizer) -> str:
    """What turns a tokenizer's text into ids: its tokenizer.json pipeline without the truncation and padding
    settings (or, without one, its class and vocabulary). Equal: the two models can share one tokenization."""
    if not tokenizer.is_fast:
        return json.dumps([type(tokenizer).__name__, sorted(tokenizer.get_vocab().items())])
    return _pipeline(tokenizer.backend_tokenizer.to_str())


def _pipeline(tokenizer_json: str) -> str:
    return json.dumps({**json.loads(tokenizer_json), "truncation": None, "padding": None}, sort_keys=True)


def _texts(examples) -> list:
    """The texts of a task's examples as a tokenizer reads them: strings, or (text, pair) tuples."""
    if hasattr(examples, "questions"):
        return list(zip(examples.questions, examples.contexts))
    if hasattr(examples, "words"):
        return [" ".join(words) for words in examples.words]
    return list(examples.inputs())


def _misalignment(texts: list, rows: list[dict], tokenizer, teacher_tokenizer, max_length: int) -> str | None:
    """Why the two tokenizers do not cut text alike (None when they do), so that intermediate states cannot be
    compared position by position: on a sample of texts each piece must span the same characters, and every
    encoded row must hold as many of the teacher's ids as of the student's. Ids may differ (MPNet's and uncased BERT's
    do: same pieces, other numbers)."""
    if not (tokenizer.is_fast and teacher_tokenizer.is_fast):
        return "a tokenizer without a tokenizer.json gives no piece offsets to compare"
    sample = texts[:ALIGNMENT_SAMPLE]
    student, teacher = (t(sample, truncation=True, max_length=max_length, return_offsets_mapping=True)["offset_mapping"]
                        for t in (tokenizer, teacher_tokenizer))
    for text, s, t in zip(sample, student, teacher):
        if s != t:
            where = next(k for k, (a, b) in enumerate(zip(s + [None], t + [None])) if a != b)
            return (f"{str(text)[:60]!r}: {len(s)} pieces by the student's tokenizer and {len(t)} by the teacher's, "
                    f"the first to differ at position {where}")
    for row in rows:
        if len(row["input_ids"]) != len(row["teacher_input_ids"]):
            return (f"an input of {len(row['input_ids'])} pieces by the student's tokenizer and "
                    f"{len(row['teacher_input_ids'])} by the teacher's")
    return None


def _usable_phases(phases: list[Phase], misaligned: str | None, stage: str) -> list[Phase]:
    """The phases that can run: the intermediate losses need tokens aligned between teacher and student; without,
    they are dropped (and the tool says which and why)."""
    for phase in phases:
        unknown = set(phase.losses) - set(TERMS)
        if unknown:
            raise TinyshipError(f"unknown loss {sorted(unknown)[0]!r}: use {', '.join(TERMS)}")
    dropped = [name for name in INTERMEDIATE_LOSSES if any(name in p.losses for p in phases)]
    if not misaligned or not dropped:
        return phases
    why = f"the teacher's and the student's tokenizers cut text into different pieces ({misaligned})"
    if stage == "general":
        raise TinyshipError(f"{why}: general distillation compares states position by position; give the student the "
                            "teacher's tokenizer")
    log.info(f"{why}: the {', '.join(dropped)} loss{'es' if len(dropped) > 1 else ''} compare states position by "
          "position and are dropped; the prediction and labels losses run, each model reading its own tokenization")
    kept = [Phase({k: w for k, w in p.losses.items() if k not in INTERMEDIATE_LOSSES}, p.epochs) for p in phases]
    return [p for p in kept if p.losses]


def _describe_heads(teacher, student, phases: list[Phase]) -> None:
    """Say how the attention loss compares a student whose head count differs from the teacher's."""
    t, s = teacher.config.num_attention_heads, student.config.num_attention_heads
    if t != s and any("attention" in p.losses for p in phases):
        log.info(f"the student has {s} attention heads and the teacher {t}: the attention loss compares each model's "
              "maps averaged over its heads")


def _teacher_inputs(row: dict) -> dict:
    """A row's model inputs as the teacher reads them: its own ids (keys teacher_...) when it has them."""
    own = {k.removeprefix("teacher_"): v for k, v in row.items() if k.startswith("teacher_")}
    return own or {k: v for k, v in row.items() if k not in ("labels", "index")}


def _teacher_engine(config: DistillConfig, teacher, task: Task, names: list[str], eval_data: list[dict],
                    pad_ids: dict, teacher_tokenizer):
    """What computes the cached logits: the teacher's bundle, served as the runtime serves it (one input per run when
    it is not batch-invariant), when config names one and its validation metric is within the tolerance of the
    PyTorch teacher's, both measured here; else None (the PyTorch teacher). Returns (the bundle's rows -> logits
    function or None, a record of both measurements and the choice)."""
    if not config.teacher_bundle:
        return None, None
    from tokenizers import Tokenizer

    from tinyship.runtime.bundle import batch_invariant, read_manifest
    from tinyship.runtime.predictor import open_session, run_rows

    manifest = read_manifest(config.teacher_bundle)
    if manifest["labels"] != names:
        raise TinyshipError(f"{config.teacher_bundle} predicts labels {manifest['labels']}, the teacher {names}: "
                            "give the bundle exported from this teacher (`tinyship export TEACHER`)")
    bundle_tokenizer = Path(config.teacher_bundle) / manifest["tokenizer"]
    if _pipeline(Tokenizer.from_file(str(bundle_tokenizer)).to_str()) != _tokenization(teacher_tokenizer):
        raise TinyshipError(f"{bundle_tokenizer} cuts text differently from the teacher's tokenizer "
                            "(a pruned vocabulary?): give the bundle exported from this teacher as it is")
    session = open_session(Path(config.teacher_bundle) / manifest["model"],
                           disabled_optimizers=manifest.get("session", {}).get("disabled_optimizers", []))
    size = config.batch_size * 2 if batch_invariant(manifest) else 1

    def bundle_logits(rows: list[dict]) -> np.ndarray:
        return np.stack([o[0] for o in run_rows(session, rows, pad_ids["input_ids"], size, per_token=False)])

    inputs, labels = [_teacher_inputs(row) for row in eval_data], [row["labels"] for row in eval_data]

    def measured(score) -> dict:
        start = time.perf_counter()
        metric = score()
        return {f"validation_{task.metric}": metric,
                "examples_per_second": round(len(inputs) / (time.perf_counter() - start), 1)}

    labelled = [{**x, "labels": y} for x, y in zip(inputs, labels)]
    sides = {"pytorch": measured(lambda: evaluate_rows(teacher, task, labelled, pad_ids,
                                                       config.batch_size * 2)[f"eval_{task.metric}"]),
             "bundle": measured(lambda: summarize(task, [(bundle_logits(inputs), np.array(labels))])[task.metric])}
    loss = sides["pytorch"][f"validation_{task.metric}"] - sides["bundle"][f"validation_{task.metric}"]
    loss = -loss if task.lower_is_better else loss
    used = loss <= config.teacher_bundle_tolerance
    log.info(f"teacher bundle {config.teacher_bundle} ({manifest.get('variant', 'onnx')}): validation {task.metric} "
          f"{sides['bundle'][f'validation_{task.metric}']:.4f} "
          f"against {sides['pytorch'][f'validation_{task.metric}']:.4f} "
          f"in PyTorch ({loss:+.4f} lost, tolerance {config.teacher_bundle_tolerance:g}); "
          f"{sides['bundle']['examples_per_second']:g} against {sides['pytorch']['examples_per_second']:g} examples/s: "
          + ("the bundle computes the teacher's logits" if used
             else "over the tolerance: the PyTorch teacher computes them"))
    record = {"engine": "bundle" if used else "pytorch", "bundle": str(config.teacher_bundle),
              "variant": manifest.get("variant"), "model_sha256": manifest["files"][manifest["model"]],
              "tolerance": config.teacher_bundle_tolerance, **sides}
    return (bundle_logits if used else None), record


def _logits_path(config: DistillConfig, checkpoints: Path, split: str, teacher_dir: Path, engine_record: dict | None,
                 bf16: bool, rows: list[dict]) -> tuple[Path, np.ndarray | None]:
    """Where the cached logits of a split's rows live, and each row's key (None without config.teacher_logits_dir):
    with the checkpoints, or in config.teacher_logits_dir under a key of what they depend on (the teacher's weights,
    the bundle that computes them if one does, else the PyTorch teacher's precision, and the teacher's inputs)."""
    if not config.teacher_logits_dir:
        return checkpoints / f"teacher_logits_{split}.npy", None
    teacher = hashlib.sha256(weights_digest(teacher_dir).encode())
    if engine_record and engine_record["engine"] == "bundle":
        teacher.update(engine_record["model_sha256"].encode())
    elif bf16:
        teacher.update(b"bf16")
    keys = np.frombuffer(b"".join(_row_key(teacher, row) for row in rows), dtype=np.uint8).reshape(len(rows), ROW_KEY)
    directory = Path(config.teacher_logits_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{hashlib.sha256(keys.tobytes()).hexdigest()[:24]}.npy", keys


ROW_KEY = 16  # bytes of a row's key: its teacher's identity and its teacher inputs, hashed


def _row_key(teacher, row: dict) -> bytes:
    key = teacher.copy()
    key.update(json.dumps(_teacher_inputs(row), sort_keys=True).encode())
    return key.digest()[:ROW_KEY]


def _known_logits(directory: Path, keys: np.ndarray) -> dict[int, np.ndarray]:
    """The logits of these rows that other caches in the directory hold already (a student on a larger set, say)."""
    wanted = {key.tobytes(): i for i, key in enumerate(keys)}
    found = {}
    for logits_file in directory.glob("*.npy"):
        if not _keys_path(logits_file).is_file():  # a key file itself, or logits cached without keys
            continue
        logits = np.load(logits_file, mmap_mode="r")
        for j, key in enumerate(np.load(_keys_path(logits_file))):
            i = wanted.get(key.tobytes())
            if i is not None and i not in found:
                found[i] = np.asarray(logits[j])
    return found


def _torch_logits(teacher, pad_ids: dict, bf16: bool):
    """The PyTorch teacher (under bf16 autocast when asked) as a function of a batch of its rows: their logits."""
    collator = PadCollator(pad_ids)

    def logits(rows: list[dict]) -> np.ndarray:
        with teacher_autocast(bf16):
            return logits_of(teacher(**collator(rows))).float().numpy()

    return logits


def _cached_logits(engine, rows: list[dict], config: DistillConfig,
                   located: tuple[Path, np.ndarray | None]) -> np.ndarray:
    """The teacher's logits for every training example, computed once (in batches of similar length) and kept on
    disk, memory-mapped; with row keys, rows that another cache in the same directory holds are taken from it.
    engine: a function of a batch of the teacher's rows to their logits."""
    path, keys = located
    if path.is_file():
        log.info(f"teacher logits: reusing {path}")
    elif is_main_process():
        from tqdm.auto import tqdm

        known = _known_logits(path.parent, keys) if keys is not None else {}
        missing = sorted((i for i in range(len(rows)) if i not in known), key=lambda i: len(rows[i]["input_ids"]))
        if known:
            log.info(f"teacher logits: {len(known)} of {len(rows)} examples found in {path.parent}")
        size = config.batch_size * 2
        logits = None
        if known:
            logits = np.empty((len(rows), *next(iter(known.values())).shape), dtype=np.float32)
            logits[list(known)] = np.stack(list(known.values()))
        start_time = time.perf_counter()
        with torch.inference_mode():
            for start in tqdm(range(0, len(missing), size), desc="caching teacher logits"):
                chosen = missing[start : start + size]
                values = engine([_teacher_inputs(rows[i]) for i in chosen])
                if logits is None:
                    logits = np.empty((len(rows), *values.shape[1:]), dtype=np.float32)
                logits[chosen] = values
        if missing:
            seconds = time.perf_counter() - start_time
            log.info(f"teacher: {len(missing)} examples in {seconds:.1f} s ({len(missing) / seconds:.0f} examples/s)")
        if keys is not None:
            _save_array(_keys_path(path), keys)
        _save_array(path, logits)
    while not path.is_file():  # other torchrun ranks wait for rank 0's file
        time.sleep(1)
    return np.load(path, mmap_mode="r")


def _keys_path(logits: Path) -> Path:
    """Where the row keys of a file of cached logits are kept."""
    return logits.with_name(logits.name.removesuffix(".npy") + ".keys.npy")


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(f"{path}.tmp", "wb") as f:
        np.save(f, array)
    os.replace(f"{path}.tmp", path)


def _size(model) -> str:
    return f"{parameter_count(model) / 1e6:.1f}M parameters"


def _cache_teacher(config: DistillConfig, teacher, student) -> bool:
    """Whether the teacher's logits are computed once: as configured (a teacher bundle is there to compute them), or
    by default when the teacher is CACHE_TEACHER_RATIO times the student's size or more (its passes would dominate
    each prediction step)."""
    if config.cache_teacher is not None or config.teacher_bundle:
        return bool(config.cache_teacher or config.teacher_bundle)
    ratio = parameter_count(teacher) / parameter_count(student)
    if ratio >= CACHE_TEACHER_RATIO:
        log.info(f"the teacher has {ratio:.1f}x the student's parameters: its logits are computed once and cached "
              "(--no-cache-teacher runs it live)")
    return ratio >= CACHE_TEACHER_RATIO


def weights_digest(model_dir: Path) -> str:
    """The sha256 of a model directory's weights: which teacher a student was distilled from."""
    weights = model_dir / "model.safetensors"
    return sha256_file(weights if weights.is_file() else model_dir / "model.safetensors.index.json")
