"""Score flags against the simulator's RFI truth (``rfi_amp_sigma`` in truth.h5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FlagScore", "score_flags"]


@dataclass(frozen=True)
class FlagScore:
    true_positive_rate: float  # flagged / RFI samples with amplitude >= min_amp_sigma
    n_rfi: int  # RFI samples with amplitude >= min_amp_sigma (cross-correlations)
    false_flag_rate: float  # flagged / clean samples the flagger could judge
    n_clean: int
    weak_detected: float  # flagged fraction of the RFI samples below min_amp_sigma (NaN if none)
    by_amp: dict[str, float]  # true-positive rate per amplitude bin "lo-hi" (sigmas)


def score_flags(*, flags: np.ndarray, amp_sigma: np.ndarray, cross: np.ndarray, min_amp_sigma: float = 5.0,
                input_flags: np.ndarray | None = None) -> FlagScore:
    """flags: (ntime, nbl, nchan, npol) bool (a sample counts as flagged when any polarization is);
    amp_sigma: (ntime, nbl, nchan) float RFI amplitude in thermal sigmas, 0 = clean; cross:
    (nbl,) bool. Samples flagged on input (missing subbands, zeros) are left out."""
    f = flags.any(axis=3)[:, cross]
    a = amp_sigma[:, cross]
    judged = np.ones_like(f) if input_flags is None else ~input_flags.any(axis=3)[:, cross]
    strong = (a >= min_amp_sigma) & judged
    clean = (a == 0) & judged
    weak = (a > 0) & (a < min_amp_sigma) & judged
    bins = {}
    for lo, hi in ((5, 7), (7, 10), (10, 20), (20, 1e9)):
        sel = (a >= lo) & (a < hi) & judged
        if sel.any():
            bins[f"{lo}-{hi:g}" if hi < 1e9 else f">={lo}"] = float(f[sel].mean())
    return FlagScore(true_positive_rate=float(f[strong].mean()) if strong.any() else float("nan"),
                     n_rfi=int(strong.sum()), false_flag_rate=float(f[clean].mean()), n_clean=int(clean.sum()),
                     weak_detected=float(f[weak].mean()) if weak.any() else float("nan"), by_amp=bins)
