"""Optimizers and learning-rate schedules for the trainer, built from optax.

Gradient descent is the lecture's update Θ ← Θ − α ∂J/∂Θ; the others are its usual refinements.
L-BFGS with optax's zoom line search is the nearest optax analogue of the course's ``fmincg``
(a full-batch quasi-Newton method with a line search); it needs the objective itself, which the
trainer passes as a ``jax.custom_vjp`` whose backward pass is the chosen gradient source, so the
line search too differentiates with the hand-derived δ recursion.
"""

from __future__ import annotations

import optax

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "lbfgs")
"""Optimizer names accepted by :func:`make_optimizer`."""

SCHEDULES = ("constant", "cosine", "linear", "exponential", "warmup_cosine")
"""Learning-rate schedules accepted by :func:`make_schedule`."""

DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "adam": 3e-3, "adamw": 3e-3, "lbfgs": 1.0}
"""Learning rate α when none is given, per optimizer (L-BFGS: the line search's initial step).
Adam's 3e-3 (rather than the usual 1e-3) goes with the cosine decay that ``jaxbp train`` uses by
default; it was chosen on validation data, never on a test split."""

FINAL_FRACTION = 0.01
"""``exponential`` decays α to this fraction of its initial value over the whole run."""

WARMUP_FRACTION = 0.05
"""``warmup_cosine`` ramps α up linearly over this fraction of the steps, then decays it."""


def check_name(kind: str, name: str, valid) -> None:
    """ValueError naming ``kind``, the bad ``name`` and the valid names."""
    if name not in valid:
        raise ValueError(f"{kind}: unknown {name!r}; valid names are {', '.join(valid)}")


def make_schedule(name: str, lr: float, total_steps: int):
    """α as a function of the step count.

    - ``constant``: α;
    - ``cosine``: α · ½(1 + cos(π t/T)), reaching 0 at step T;
    - ``linear``: α (1 − t/T);
    - ``exponential``: α · 0.01^(t/T);
    - ``warmup_cosine``: linear ramp from 0 over the first 5 % of steps, then cosine to 0.

    Args:
      name: one of :data:`SCHEDULES`.
      lr: the peak learning rate α > 0.
      total_steps: T, the number of optimizer steps in the whole run.

    Returns:
      A float (constant) or an ``optax.Schedule``.
    """
    check_name("schedule", name, SCHEDULES)
    if not lr > 0:
        raise ValueError(f"lr: must be > 0, got {lr!r}")
    steps = max(int(total_steps), 1)
    if name == "constant":
        return lr
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, steps)
    if name == "linear":
        return optax.linear_schedule(lr, 0.0, steps)
    if name == "exponential":
        return optax.exponential_decay(lr, steps, FINAL_FRACTION)
    warmup = max(int(WARMUP_FRACTION * steps), 1)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1))


def make_optimizer(
    name: str,
    *,
    lr: float,
    schedule: str = "constant",
    total_steps: int = 1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
) -> optax.GradientTransformation:
    """An optax optimizer.

    Args:
      name: ``sgd`` (Θ ← Θ − α g), ``momentum`` (heavy ball, β = ``momentum``), ``adam``,
        ``adamw`` (decoupled ``weight_decay``), ``lbfgs`` (memory 10, zoom line search;
        full batch only, constant schedule only).
      lr: α > 0.
      schedule: one of :data:`SCHEDULES`.
      total_steps: optimizer steps in the whole run, for the schedule.
      momentum: β ∈ [0, 1) of ``momentum``.
      weight_decay: ≥ 0, of ``adamw``.

    Raises:
      ValueError: an unknown name, a bad value, a schedule with L-BFGS.
    """
    check_name("optimizer", name, OPTIMIZERS)
    rate = make_schedule(schedule, lr, total_steps)
    if name == "sgd":
        return optax.sgd(rate)
    if name == "momentum":
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum: must be in [0, 1), got {momentum!r}")
        return optax.sgd(rate, momentum=momentum)
    if name == "adam":
        return optax.adam(rate)
    if name == "adamw":
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay: must be ≥ 0, got {weight_decay!r}")
        return optax.adamw(rate, weight_decay=weight_decay)
    if schedule != "constant":
        raise ValueError(
            f"schedule: L-BFGS chooses its own step by line search; use 'constant', got {schedule!r}"
        )
    return optax.lbfgs(learning_rate=lr)


def needs_value_fn(name: str) -> bool:
    """True for optimizers whose ``update`` needs the objective (``value``, ``value_fn``)."""
    return name == "lbfgs"
