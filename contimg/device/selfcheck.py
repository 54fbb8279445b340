"""The backend of each stage (flag, calibrate, image), chosen once at start-up after a self-check
of the stage's device path against its CPU twin.

This module is the mechanism, with no knowledge of the stages (it sits below them): a check is a
callable returning `Figure`\\ s (a measured disagreement and the limit it must stay within);
`choose_backend` runs it when the stage may use the device and records the outcome as a
`StageBackend`. The stages' own checks, on a small simulated group each, and `choose_backends`,
which runs all three, are in `contimg.imaging.selfcheck` (the lowest layer that sees every stage).

``requested``: "cpu" never touches the device; "gpu" uses it and raises when there is none or its
check fails; "auto" uses it when there is one and its check passes, and otherwise falls back to
the CPU with the reason logged (an error when a check disagreed). `chosen_backends` returns what
was chosen, with the figures, for ``status``, the web page and the metrics.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

__all__ = ["STAGES", "Figure", "StageBackend", "SelfCheckFailed", "choose_backend", "chosen_backends", "chosen",
           "forget_choices"]

log = logging.getLogger(__name__)

STAGES = ("flag", "calibrate", "image")


@dataclass(frozen=True)
class Figure:
    """One number of a self-check: ``value`` (a disagreement between the device path and the CPU
    twin, e.g. a relative L2 difference) must be finite and at most ``limit``."""

    name: str
    value: float
    limit: float

    @property
    def ok(self) -> bool:
        return math.isfinite(self.value) and self.value <= self.limit


@dataclass(frozen=True)
class StageBackend:
    """The backend a stage runs on and why.

    backend: "cpu" or "gpu"; checked: the self-check ran; passed: its outcome (None when it did
    not run); figures: its numbers; reason: one line (why the CPU when it is the CPU); seconds:
    the check's wall time; at: when it was chosen (Unix time)."""

    stage: str
    requested: str
    backend: str
    checked: bool
    passed: bool | None
    reason: str
    figures: tuple[Figure, ...] = ()
    seconds: float = 0.0
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict:
        """Plain types (JSON): figures as {name: {"value", "limit", "ok"}}."""
        d = asdict(self)
        d["figures"] = {f.name: {"value": f.value, "limit": f.limit, "ok": f.ok} for f in self.figures}
        return d


class SelfCheckFailed(RuntimeError):
    """``backend = "gpu"`` was asked for, and the stage's device path disagreed with its CPU twin
    (or raised)."""


_LOCK = threading.Lock()
_CHOSEN: dict[str, StageBackend] = {}


def choose_backend(stage: str, requested: str, *, device_available: bool,
                   check: Callable[[], Sequence[Figure]]) -> StageBackend:
    """Choose ``stage``'s backend for ``requested`` ("auto", "cpu" or "gpu") and record it.

    ``check`` runs only when the device may be used: it returns the figures of the device path
    against the CPU twin on a small problem; an exception from it counts as a disagreement.
    Raises ValueError for an unknown request, RuntimeError for "gpu" without a device and
    `SelfCheckFailed` for "gpu" whose check disagreed (recorded all the same)."""
    if requested not in ("auto", "cpu", "gpu"):
        raise ValueError(f"unknown {stage}.backend {requested!r} (auto, cpu or gpu)")
    if requested == "cpu":
        return _record(StageBackend(stage, requested, "cpu", False, None, "configured: cpu"))
    if not device_available:
        if requested == "gpu":
            raise RuntimeError(f"{stage}.backend = 'gpu', but cupy finds no CUDA device")
        choice = _record(StageBackend(stage, requested, "cpu", False, None, "no CUDA device"))
        log.info("%s on the CPU: no CUDA device", stage)
        return choice
    t0 = time.perf_counter()
    try:
        figures = tuple(check())
        bad = [f for f in figures if not f.ok]
        problem = "; ".join(f"{f.name} {f.value:.3g} > {f.limit:.3g}" for f in bad) if bad else None
        if not figures:
            problem = "the self-check returned no figure"
    except Exception as exc:  # noqa: BLE001 - any failure of the device path means: do not use it
        figures, problem = (), f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    if problem is None:
        return _record(StageBackend(stage, requested, "gpu", True, True,
                                    "self-check passed against the CPU twin", figures, seconds))
    reason = f"self-check against the CPU twin failed: {problem}"
    choice = _record(StageBackend(stage, requested, "cpu", True, False, reason, figures, seconds))
    if requested == "gpu":
        raise SelfCheckFailed(f"{stage}.backend = 'gpu', but the device {reason}")
    log.error("%s on the CPU (backend auto): the device %s", stage, reason)
    return choice


def _record(choice: StageBackend) -> StageBackend:
    with _LOCK:
        _CHOSEN[choice.stage] = choice
    return choice


def chosen(stage: str) -> StageBackend | None:
    """The recorded choice of ``stage`` (None before `choose_backend` ran for it)."""
    with _LOCK:
        return _CHOSEN.get(stage)


def chosen_backends() -> dict[str, dict]:
    """Every recorded choice in this process, as plain types for ``status``, the web page and the
    metrics: {stage: `StageBackend.as_dict`} ({} before any choice)."""
    with _LOCK:
        return {stage: c.as_dict() for stage, c in _CHOSEN.items()}


def forget_choices() -> None:
    """Drop the recorded choices (a new configuration, and the tests)."""
    with _LOCK:
        _CHOSEN.clear()
