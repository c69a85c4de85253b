"""Each method's training recipe: the optimiser, schedule and batch size of its paper.

A tuner returns its recipe from ``training_recipe()``; :class:`peft_interp.training.InterpTrainer` builds the
optimiser and the learning-rate schedule from it, and every field can be overridden by the trainer's arguments.
Schedules are given in epochs, as the papers give them, and turned into optimiser steps by the trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class TrainingRecipe:
    """Optimiser and schedule of a method.

    Args:
        optimizer: ``"adam"`` or ``"sgd"``.
        learning_rate: peak learning rate of the first parameter group (the tuner's ``optimizer_param_groups`` may
            give other groups their own rates; they are scaled by the same schedule).
        momentum, weight_decay: SGD momentum (ignored by Adam) and weight decay.
        scheduler: ``"cosine"`` (to zero at the last step), ``"step"`` (times ``gamma`` every ``step_size_epochs``)
            or ``"constant"``.
        warmup_epochs: epochs at the constant ``warmup_learning_rate`` before the schedule starts (CoOp: 1 at 1e-5).
        epochs, batch_size: the paper's training length and batch size.
        max_grad_norm: gradient clipping norm, ``None`` for none.
        source: where the numbers come from.
    """

    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: Literal["cosine", "step", "constant"] = "constant"
    warmup_epochs: float = 0.0
    warmup_learning_rate: float = 1e-5
    step_size_epochs: float = 1.0
    gamma: float = 0.5
    epochs: float = 10
    batch_size: int = 32
    max_grad_norm: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.scheduler not in ("cosine", "step", "constant"):
            raise ValueError(f"scheduler must be 'cosine', 'step' or 'constant', got {self.scheduler!r}")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.epochs <= 0:
            raise ValueError("learning_rate, batch_size and epochs must be positive")

    def override(self, **changes) -> TrainingRecipe:
        """A copy with the given fields changed; ``None`` values are ignored."""
        return replace(self, **{key: value for key, value in changes.items() if value is not None})

    def lr_factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        """Multiplier of every group's learning rate at optimiser step ``step`` (0-based)."""
        warmup_steps = round(self.warmup_epochs * steps_per_epoch)
        if step < warmup_steps:
            return self.warmup_learning_rate / self.learning_rate
        step -= warmup_steps
        if self.scheduler == "cosine":
            span = max(total_steps - warmup_steps, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(step, span) / span))
        if self.scheduler == "step":
            return self.gamma ** (step // max(round(self.step_size_epochs * steps_per_epoch), 1))
        return 1.0


# The CoOp family's protocol (CoOp, KgCoOp, IPL): SGD, cosine, one warm-up epoch at a constant 1e-5.
COOP_RECIPE = TrainingRecipe(
    optimizer="sgd", learning_rate=0.002, momentum=0.9, weight_decay=5e-4, scheduler="cosine", warmup_epochs=1,
    warmup_learning_rate=1e-5, epochs=200, batch_size=32, source="CoOp (Zhou et al. 2022), 16 shots",
)  # fmt: skip

# IVPT's official run: Adam, StepLR x0.5 every 4 epochs, 25 epochs, gradient clipping 2.0, 4 GPUs x 4 images.
IVPT_RECIPE = TrainingRecipe(
    optimizer="adam", learning_rate=1e-2, scheduler="step", step_size_epochs=4, gamma=0.5, epochs=25, batch_size=16,
    max_grad_norm=2.0, source="IVPT official code (ThomasWangY/IVPT)",
)  # fmt: skip
