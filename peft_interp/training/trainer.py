"""The training loop on Accelerate, for every peft-interp method.

Everything method-specific comes from the tuner, not from branches here:

* ``tuner.training_recipe()`` — the paper's optimiser, schedule, batch size, clipping
  (:class:`~peft_interp.tuners.recipe.TrainingRecipe`); :class:`TrainingArguments` override any of them;
* ``tuner.optimizer_param_groups()`` — parameter groups with their own learning rates (IVPT has two);
* ``tuner.on_train_begin(dataset, collate_fn, steps_per_epoch)`` — once before the loop (IPL caches the training
  images' features for its word selection);
* ``tuner.on_train_step_begin(step)`` — discrete phases between optimiser steps (IPL's word selection);
* the forward pass in training mode returns the method's whole loss (IVPT's equivariance pass included).
* ``tuner.on_epoch_end(epoch, num_epochs)`` — after each epoch's last step (PromptSRC's prompt aggregation).

Data order is a function of ``(seed, epoch)`` only and each step knows where it is in it, so a run resumed from a
checkpoint (:mod:`.checkpoint`) continues with exactly the batches, random numbers and optimiser state the
uninterrupted run had: the final adapter weights are bit-identical.

Multi-process runs (``accelerate launch --num_processes 2 ...``) split every global batch between the processes;
the global batch is ``batch_size x processes x gradient_accumulation_steps``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from peft import set_peft_model_state_dict
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from safetensors import SafetensorError

from ..tuners.base import InterpTuner
from ..validation import check_number
from ..weights import verify_weights_file
from .checkpoint import (
    MANIFEST,
    TRAINER_STATE,
    checkpoint_dir,
    claim_output_dir,
    latest_checkpoint,
    list_checkpoint_folders,
    load_state,
    prune_checkpoints,
    publish,
    read_manifest,
    rng_state,
    save_state,
    set_rng_state,
    staging_dir,
    verify_checkpoint,
    write_manifest,
)
from .data import to_device

FINAL_ADAPTER = "adapter"
BEST_ADAPTER = "best-adapter"  # the adapter of the best periodic evaluation (``eval_steps``)


@dataclass
class TrainingArguments:
    """How to train. ``None`` fields take the method's recipe (``model.base_model.training_recipe()``).

    Args:
        output_dir: where checkpoints (``checkpoint-{step}``) and the final adapter (``adapter/``) go.
        max_steps: optimiser steps; default ``epochs`` x steps per epoch.
        epochs: passes over the training set (default: the recipe's).
        batch_size: images per process and per forward pass (default: the recipe's).
        gradient_accumulation_steps: forward passes per optimiser step.
        learning_rate, warmup_epochs, max_grad_norm: override the recipe's.
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"`` (Accelerate's autocast; adapters stay fp32).
        save_steps: save a checkpoint every that many optimiser steps (0: only at the end).
        save_total_limit: keep only the newest that many checkpoints of this run (``None``: all); checkpoints of
            other runs and files this run did not write are never deleted.
        logging_steps: log the loss every that many steps.
        seed: seeds initialisation, data order and augmentation.
        num_workers: DataLoader worker processes.
        report_to: Accelerate tracker (``"tensorboard"``, ``"wandb"``, ...); ``"auto"``: tensorboard when it is
            installed, else none; ``None`` for none. Logs go to ``output_dir``.
        resume_from_checkpoint: ``True`` for the newest checkpoint of the run in ``output_dir``, or a checkpoint
            folder. A finished run can be resumed to more steps when its learning-rate schedule up to the checkpoint
            does not depend on the total (exactly what an uninterrupted longer run does); otherwise it says why not.
        overwrite_output_dir: start a new run in an ``output_dir`` that is not empty (another run's folder, or other
            files). Nothing the new run did not write is deleted; its checkpoints and ``adapter/`` replace folders
            of the same names. Without it such a folder is refused before training.
        eval_steps: evaluate top-1 accuracy on the trainer's ``eval_dataset`` every that many optimiser steps and at
            the end (0: never); the adapter with the best accuracy so far is kept in ``output_dir/best-adapter``.
        eval_batch_size: images per evaluation forward pass.
    """

    output_dir: str
    max_steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    learning_rate: float | None = None
    warmup_epochs: float | None = None
    max_grad_norm: float | None = None
    mixed_precision: str = "no"
    save_steps: int = 0
    save_total_limit: int | None = 2
    logging_steps: int = 10
    seed: int = 0
    num_workers: int = 0
    report_to: str | None = "auto"
    resume_from_checkpoint: bool | str = False
    eval_steps: int = 0
    eval_batch_size: int = 64
    overwrite_output_dir: bool = False

    def __post_init__(self) -> None:
        if self.report_to == "auto":
            from accelerate.utils import is_tensorboard_available

            self.report_to = "tensorboard" if is_tensorboard_available() else None
        for name in ("max_steps", "batch_size"):
            check_number(name, getattr(self, name), integer=True, minimum=1, allow_none=True)
        check_number("gradient_accumulation_steps", self.gradient_accumulation_steps, integer=True, minimum=1)
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        check_number("save_steps", self.save_steps, integer=True, minimum=0)
        check_number("save_total_limit", self.save_total_limit, integer=True, minimum=1, allow_none=True)
        check_number("logging_steps", self.logging_steps, integer=True, minimum=1)
        check_number("num_workers", self.num_workers, integer=True, minimum=0)
        check_number("seed", self.seed, integer=True, minimum=0, maximum=2**32 - 1)
        check_number("learning_rate", self.learning_rate, minimum=0, exclusive_minimum=True, allow_none=True)
        check_number("epochs", self.epochs, minimum=0, exclusive_minimum=True, allow_none=True)
        check_number("warmup_epochs", self.warmup_epochs, minimum=0, allow_none=True)
        check_number("max_grad_norm", self.max_grad_norm, minimum=0, exclusive_minimum=True, allow_none=True)
        if not str(self.output_dir or "").strip():
            raise ValueError("output_dir must name a folder, got an empty value")
        check_number("eval_steps", self.eval_steps, integer=True, minimum=0)
        check_number("eval_batch_size", self.eval_batch_size, integer=True, minimum=1)


@dataclass
class TrainerState:
    """What a checkpoint records besides the weights; ``step`` optimiser steps are done."""

    step: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    global_batch_size: int = 0
    num_processes: int = 1
    seed: int = 0
    log_history: list[dict] = field(default_factory=list)
    best_metric: float | None = None  # best evaluation accuracy so far (eval_steps)
    best_step: int | None = None
    run_id: str = ""  # the run that owns the output folder (run.json)
    window_losses: list[float] = field(default_factory=list)  # losses of the logging window not yet logged
    recipe: dict = field(default_factory=dict)  # the resolved recipe (learning rate, schedule, ...)


@dataclass
class TrainOutput:
    steps: int
    loss: float  # mean loss of the last logging window
    seconds: float
    images_per_second: float
    adapter_dir: Path
    best_adapter_dir: Path | None = None  # with eval_steps: the adapter of the best evaluation
    best_metric: float | None = None


class InterpTrainer:
    """Train a peft-interp ``PeftModel`` on a map-style dataset.

    Args:
        model: the ``PeftModel`` (``get_peft_model(backbone, SomeConfig(...))``).
        args: :class:`TrainingArguments`.
        train_dataset: indexable rows (a ``datasets.Dataset``).
        collate_fn: rows -> model inputs (e.g. :class:`~peft_interp.training.data.ImageCollator`).
        accelerator: reuse an ``Accelerator``; one is made from ``args`` otherwise.
        eval_dataset, eval_collate_fn: the validation rows and their collator, evaluated every ``args.eval_steps``.

    Example (a tiny random DINOv2 and four random images; real runs use ``peft-interp train``):

        ```py
        >>> import torch, tempfile
        >>> from peft import get_peft_model
        >>> from transformers import Dinov2Config, Dinov2Model
        >>> from peft_interp import VPTDeepConfig
        >>> from peft_interp.training import InterpTrainer, TrainingArguments
        >>> backbone = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        ...                                     intermediate_size=64, patch_size=8, image_size=16))
        >>> model = get_peft_model(backbone, VPTDeepConfig(num_classes=2, image_size=16))
        >>> rows = [{"pixel_values": torch.randn(3, 16, 16), "labels": torch.tensor(i % 2)} for i in range(4)]
        >>> collate = lambda batch: {key: torch.stack([row[key] for row in batch]) for key in batch[0]}
        >>> args = TrainingArguments(tempfile.mkdtemp(), max_steps=2, batch_size=2, logging_steps=1)
        >>> InterpTrainer(model, args, rows, collate, progress=False).train().steps
        2

        ```
    """

    def __init__(
        self,
        model,
        args: TrainingArguments,
        train_dataset,
        collate_fn: Callable[[list], dict],
        accelerator: Accelerator | None = None,
        progress: bool = True,
        eval_dataset=None,
        eval_collate_fn: Callable[[list], dict] | None = None,
    ) -> None:
        if args.eval_steps and eval_dataset is None:
            raise ValueError("eval_steps is set but no eval_dataset was given (a validation split to evaluate on)")
        self.eval_dataset = eval_dataset
        self.eval_collate_fn = eval_collate_fn or collate_fn
        self.args = args
        self.train_dataset = train_dataset
        self.collate_fn = collate_fn
        self.progress = progress
        self.output_dir = Path(args.output_dir)
        self.accelerator = accelerator or Accelerator(
            # Several processes and no GPU (`accelerate launch --multi_gpu --num_processes 2` or `torchrun` on a
            # CPU machine): Accelerate only runs them as one gloo group when told to use the CPU.
            cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1,
            mixed_precision=args.mixed_precision,
            log_with=args.report_to,
            project_dir=str(self.output_dir),
            # Methods leave some adapter parameters out of some steps (IPL before its first selection, ...).
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.tuner = model.base_model
        self.recipe = self.tuner.training_recipe().override(
            learning_rate=args.learning_rate, warmup_epochs=args.warmup_epochs, max_grad_norm=args.max_grad_norm,
            batch_size=args.batch_size, epochs=args.epochs,
        )  # fmt: skip
        self.model = model

    # ------------------------------------------------------------------------------------------------ sizes
    @property
    def global_batch_size(self) -> int:
        return self.recipe.batch_size * self.accelerator.num_processes * self.args.gradient_accumulation_steps

    @property
    def steps_per_epoch(self) -> int:
        steps = len(self.train_dataset) // self.global_batch_size
        if steps == 0:
            raise ValueError(
                f"The training set has {len(self.train_dataset)} examples, fewer than one global batch of "
                f"{self.global_batch_size} (batch_size x processes x gradient_accumulation_steps): lower batch_size."
            )
        return steps

    @property
    def total_steps(self) -> int:
        return self.args.max_steps or math.ceil(self.recipe.epochs * self.steps_per_epoch)

    # ------------------------------------------------------------------------------------------- optimisation
    def create_optimizer(self) -> torch.optim.Optimizer:
        """The recipe's optimiser over the tuner's parameter groups; a changed learning rate scales every group."""
        scale = self.recipe.learning_rate / self.tuner.training_recipe().learning_rate
        groups = [{**group, "lr": group.get("lr", self.recipe.learning_rate) * scale}
                  for group in self.tuner.optimizer_param_groups() if group["params"]]  # fmt: skip
        if self.recipe.optimizer == "sgd":
            return torch.optim.SGD(groups, momentum=self.recipe.momentum, weight_decay=self.recipe.weight_decay)
        return torch.optim.Adam(groups, weight_decay=self.recipe.weight_decay)

    def create_scheduler(self, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        steps_per_epoch, total = self.steps_per_epoch, self.total_steps
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.recipe.lr_factor(step, steps_per_epoch, total))

    # ---------------------------------------------------------------------------------------------------- data
    def epoch_order(self, epoch: int) -> torch.Tensor:
        """``(N,)`` the shuffled example order of ``epoch``: a function of ``(seed, epoch)`` only."""
        generator = torch.Generator().manual_seed(self.args.seed * 100_003 + epoch)
        return torch.randperm(len(self.train_dataset), generator=generator)

    def micro_batches(self, first_step: int):
        """Index lists of this process's forward passes, from optimiser step ``first_step`` on."""
        batch, processes, rank = self.recipe.batch_size, self.accelerator.num_processes, self.accelerator.process_index
        accumulation, steps_per_epoch = self.args.gradient_accumulation_steps, self.steps_per_epoch
        order_epoch, order = None, None
        for step in range(first_step, self.total_steps):
            epoch, position = divmod(step, steps_per_epoch)
            if epoch != order_epoch:  # one permutation per epoch, not per step
                order_epoch, order = epoch, self.epoch_order(epoch)
            for micro in range(accumulation):
                start = ((position * accumulation + micro) * processes + rank) * batch
                yield order[start : start + batch].tolist()

    def _loader(self, first_step: int) -> DataLoader:
        remaining = (self.total_steps - first_step) * self.args.gradient_accumulation_steps
        return DataLoader(
            self.train_dataset,
            batch_sampler=_Sized(self.micro_batches(first_step), remaining),
            collate_fn=self.collate_fn,
            num_workers=self.args.num_workers,
            generator=torch.Generator().manual_seed(self.args.seed),  # keeps the global RNG untouched
        )

    # ---------------------------------------------------------------------------------------------- training
    def train(self) -> TrainOutput:
        accelerator, args = self.accelerator, self.args
        run_id = self._claim_output_dir()  # before any work: a bad folder fails here, not at the first save
        set_seed(args.seed)
        optimizer = self.create_optimizer()
        scheduler = self.create_scheduler(optimizer)
        model, optimizer = accelerator.prepare(self.model, optimizer)
        self._optimizer, self._scheduler = optimizer, scheduler
        state = TrainerState(
            steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps, global_batch_size=self.global_batch_size,
            num_processes=accelerator.num_processes, seed=args.seed, run_id=run_id, recipe=self._recipe_record(),
        )  # fmt: skip
        if args.resume_from_checkpoint:
            state = self._resume(state)
        if args.report_to:
            accelerator.init_trackers("peft-interp", config={k: v for k, v in asdict(self.recipe).items() if v is not None})

        trainable = [param for group in optimizer.param_groups for param in group["params"]]
        self.tuner.on_train_begin(self.train_dataset, self.collate_fn, state.steps_per_epoch)
        model.train()
        batches = iter(self._loader(state.step))
        images, start = 0, time.perf_counter()
        progress = tqdm(
            total=state.total_steps, initial=state.step, desc=f"training {self.tuner.peft_config[self.tuner.active_adapters[0]].method_name}",
            unit="step", disable=not (self.progress and accelerator.is_local_main_process),
        )  # fmt: skip
        for step in range(state.step, state.total_steps):
            self.tuner.on_train_step_begin(step)
            step_loss = 0.0
            for micro in range(args.gradient_accumulation_steps):
                batch = to_device(next(batches), accelerator.device)
                last = micro == args.gradient_accumulation_steps - 1
                with contextlib.nullcontext() if last else accelerator.no_sync(model), accelerator.autocast():
                    loss = model(**batch).loss / args.gradient_accumulation_steps
                accelerator.backward(loss)
                step_loss += loss.item()
                images += len(batch["labels"]) * accelerator.num_processes
            if self.recipe.max_grad_norm is not None:
                accelerator.clip_grad_norm_(trainable, self.recipe.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            state.step = step + 1
            if state.step % self.steps_per_epoch == 0 or state.step == state.total_steps:
                self.tuner.on_epoch_end(math.ceil(state.step / self.steps_per_epoch),
                                        math.ceil(state.total_steps / self.steps_per_epoch))  # fmt: skip
            state.window_losses.append(step_loss)  # saved with checkpoints: a resumed run logs the same means
            progress.update(1)
            rate = images / (time.perf_counter() - start)
            progress.set_postfix(loss=f"{step_loss:.3f}", img_s=f"{rate:.1f}")
            if state.step % args.logging_steps == 0 or state.step == state.total_steps:
                record = {"step": state.step, "loss": sum(state.window_losses) / len(state.window_losses),
                          "learning_rate": scheduler.get_last_lr()[0], "images_per_second": rate}  # fmt: skip
                state.log_history.append(record)
                if args.report_to:
                    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.step)
                state.window_losses = []
            if args.eval_steps and (state.step % args.eval_steps == 0 or state.step == state.total_steps):
                self.evaluate_and_keep_best(model, state)
            if args.save_steps and state.step % args.save_steps == 0 and state.step != state.total_steps:
                self.save_checkpoint(state)
        progress.close()
        self.save_checkpoint(state)
        adapter_dir = self.output_dir / FINAL_ADAPTER
        if accelerator.is_main_process:  # written beside, then renamed into place, like the checkpoints
            staging = self.output_dir / f".tmp-{FINAL_ADAPTER}"
            with _naming_failed_writes(staging, adapter_dir):
                accelerator.unwrap_model(model).save_pretrained(staging)
                publish(staging, adapter_dir)
        accelerator.wait_for_everyone()
        if args.report_to:
            accelerator.end_training()
        seconds = time.perf_counter() - start
        losses = [record["loss"] for record in state.log_history if "loss" in record]  # (eval records have none)
        last_loss = losses[-1] if losses else float("nan")
        best_dir = self.output_dir / BEST_ADAPTER if state.best_step is not None else None
        return TrainOutput(state.step, last_loss, seconds, images / max(seconds, 1e-9), adapter_dir, best_dir,
                           state.best_metric)  # fmt: skip

    # ------------------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model=None) -> dict:
        """``{"eval_accuracy": top-1 on eval_dataset}``, in eval mode, without touching the random state (so an
        evaluated run draws the same numbers as one that is not, and resumes exactly)."""
        model = self.accelerator.unwrap_model(model or self.model)
        was_training = model.training
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        correct = total = 0
        with torch.random.fork_rng(devices=devices):
            model.eval()
            size = self.args.eval_batch_size
            for start in range(0, len(self.eval_dataset), size):
                rows = [self.eval_dataset[i] for i in range(start, min(start + size, len(self.eval_dataset)))]
                batch = to_device(self.eval_collate_fn(rows), self.accelerator.device)
                labels = batch.pop("labels")
                batch.pop("attributes", None)  # a training signal, not an input at test time
                with self.accelerator.autocast():
                    logits = model(**batch).logits
                correct += int((logits.argmax(dim=-1) == labels).sum())
                total += len(labels)
        model.train(was_training)
        return {"eval_accuracy": correct / max(total, 1)}

    def evaluate_and_keep_best(self, model, state: TrainerState) -> dict:
        """Evaluate (main process), log, and write the adapter to ``best-adapter`` when accuracy improves."""
        accelerator = self.accelerator
        metrics = {}
        if accelerator.is_main_process:
            metrics = self.evaluate(model)
            accuracy = metrics["eval_accuracy"]
            state.log_history.append({"step": state.step, **metrics})
            if self.args.report_to:
                accelerator.log(metrics, step=state.step)
            if state.best_metric is None or accuracy > state.best_metric:
                state.best_metric, state.best_step = accuracy, state.step
                staging = self.output_dir / f".tmp-{BEST_ADAPTER}"
                accelerator.unwrap_model(model).save_pretrained(staging)
                (staging / "best_metric.json").write_text(json.dumps({"step": state.step, **metrics}, indent=2))
                publish(staging, self.output_dir / BEST_ADAPTER)
        accelerator.wait_for_everyone()
        return metrics

    # ------------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, state: TrainerState) -> Path:
        """Write ``checkpoint-{step}`` atomically (all processes must call this)."""
        accelerator = self.accelerator
        staging, final = staging_dir(self.output_dir, state.step), checkpoint_dir(self.output_dir, state.step)
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)  # a partial one from an earlier failed save
            with _naming_failed_writes(staging, final):
                staging.mkdir(parents=True)
        accelerator.wait_for_everyone()
        with _naming_failed_writes(staging, final):
            save_state(rng_state(), staging, f"rng_state_{accelerator.process_index}")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with _naming_failed_writes(staging, final):
                accelerator.unwrap_model(self.model).save_pretrained(staging)
                save_state(self._optimizer.state_dict(), staging, "optimizer")
                save_state(self._scheduler.state_dict(), staging, "scheduler")
                (staging / TRAINER_STATE).write_text(json.dumps(asdict(state), indent=2))
                write_manifest(staging, state.step, state.run_id)  # last: a checkpoint without one is unfinished
                publish(staging, final)
            prune_checkpoints(self.output_dir, self.args.save_total_limit, state.run_id)
        accelerator.wait_for_everyone()
        return final

    def _claim_output_dir(self) -> str:
        """:func:`~.checkpoint.claim_output_dir` on the main process; every process gets the run id."""
        args = self.args
        if self.accelerator.is_main_process:
            claim_output_dir(self.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir, FINAL_ADAPTER)
        self.accelerator.wait_for_everyone()
        from .checkpoint import read_run_id

        return read_run_id(self.output_dir)

    def _recipe_record(self) -> dict:
        """The resolved recipe, JSON-ready (epochs left out: it changes the total steps, checked separately)."""
        return json.loads(json.dumps({k: v for k, v in asdict(self.recipe).items() if k != "epochs"}, default=str))

    def _resume(self, fresh: TrainerState) -> TrainerState:
        resume = self.args.resume_from_checkpoint
        folder = latest_checkpoint(self.output_dir, fresh.run_id) if resume is True else Path(resume)
        if folder is None:  # nothing saved yet: start from scratch, unless checkpoints there cannot be verified
            unverifiable = [path for path in list_checkpoint_folders(self.output_dir) if read_manifest(path) is None]
            if unverifiable:
                raise ValueError(f"checkpoint {unverifiable[-1]} has no valid {MANIFEST} (damaged, or written by an older "
                                 "peft-interp): it cannot be resumed from safely; use --overwrite-output-dir without "
                                 "--resume to start over")  # fmt: skip
            return fresh
        manifest = verify_checkpoint(folder)  # every file against its SHA-256, written last
        try:
            saved = TrainerState(**json.loads((folder / TRAINER_STATE).read_text()))
        except (TypeError, ValueError) as error:
            raise ValueError(f"checkpoint {folder}: {TRAINER_STATE} is not a trainer state: {error}") from error
        if saved.step != manifest["step"]:
            raise ValueError(f"checkpoint {folder}: {TRAINER_STATE} says step {saved.step}, {MANIFEST} step "
                             f"{manifest['step']}")  # fmt: skip
        for name in ("global_batch_size", "num_processes", "steps_per_epoch", "seed"):
            if getattr(saved, name) != getattr(fresh, name):
                raise ValueError(
                    f"Cannot resume exactly from {folder}: it was written with {name}={getattr(saved, name)}, this run "
                    f"has {name}={getattr(fresh, name)}. Use the same data, batch size, processes, steps and seed."
                )
        changed = sorted(key for key in saved.recipe.keys() | fresh.recipe.keys() if saved.recipe.get(key) != fresh.recipe.get(key))
        if saved.recipe and changed:
            details = ", ".join(f"{key}={saved.recipe.get(key)!r} (now {fresh.recipe.get(key)!r})" for key in changed)
            raise ValueError(f"Cannot resume exactly from {folder}: it was trained with {details}; use the same settings")
        if saved.total_steps != fresh.total_steps:
            self._check_extension(folder, saved, fresh)
        set_peft_model_state_dict(self.accelerator.unwrap_model(self.model), verify_weights_file(folder / "adapter_model.safetensors"))
        self._optimizer.load_state_dict(load_state(folder, "optimizer"))
        scheduler_state = load_state(folder, "scheduler")
        if scheduler_state.get("last_epoch") != saved.step:
            raise ValueError(f"checkpoint {folder}: scheduler.json is at step {scheduler_state.get('last_epoch')}, the "
                             f"checkpoint at step {saved.step}: the files do not belong together")  # fmt: skip
        self._scheduler.load_state_dict(scheduler_state)
        set_rng_state(load_state(folder, f"rng_state_{self.accelerator.process_index}"))
        saved.total_steps, saved.run_id, saved.recipe = fresh.total_steps, fresh.run_id, fresh.recipe
        return saved

    def _check_extension(self, folder: Path, saved: TrainerState, fresh: TrainerState) -> None:
        """A run resumed to another total: allowed when its steps so far had the learning rates an uninterrupted
        run of the new total has (then the result is that run's, bit for bit); else a ValueError saying why not."""
        if saved.step > fresh.total_steps:
            raise ValueError(f"Cannot resume from {folder}: it is at step {saved.step}, beyond this run's total of "
                             f"{fresh.total_steps} steps (--max-steps / --epochs)")  # fmt: skip
        per_epoch = fresh.steps_per_epoch
        if type(self.tuner).on_epoch_end is not InterpTuner.on_epoch_end:
            raise ValueError(
                f"Cannot resume {folder} (a {saved.total_steps}-step run) as a {fresh.total_steps}-step run: "
                f"{type(self.tuner).__name__} has an end-of-epoch step that depends on the number of epochs (e.g. "
                "PromptSRC's prompt aggregation). Resume with the same steps, or start a new run."
            )
        for step in range(saved.step):
            before = self.recipe.lr_factor(step, per_epoch, saved.total_steps)
            after = self.recipe.lr_factor(step, per_epoch, fresh.total_steps)
            if before != after:
                raise ValueError(
                    f"Cannot resume {folder} (a {saved.total_steps}-step run) as a {fresh.total_steps}-step run: the "
                    f"learning-rate schedule depends on the total (step {step}: factor {before:.6g} vs {after:.6g}), so "
                    f"the result would not be that of an uninterrupted {fresh.total_steps}-step run. Resume with "
                    f"{saved.total_steps} steps, or start a new run."
                )


@contextlib.contextmanager
def _naming_failed_writes(staging: Path, final: Path):
    """Turn a failed write (full disk, ...) into an ``OSError`` naming what was being saved, and remove the partial
    ``staging`` folder so that a retry starts clean."""
    try:
        yield
    except (OSError, SafetensorError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        reason = getattr(error, "strerror", None) or str(error)
        where = f" (file {error.filename})" if getattr(error, "filename", None) else ""
        raise OSError(f"could not write {final}: {reason}{where}; nothing of it was kept, the earlier checkpoints "
                      "are intact") from error  # fmt: skip


class _Sized:
    """An iterable of index lists with a length (DataLoader's ``batch_sampler``)."""

    def __init__(self, batches, length: int) -> None:
        self.batches, self.length = batches, length

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return self.length
