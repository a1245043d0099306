"""Paired comparisons of an arm with the vanilla baseline over seeds.

The runs of a sweep are paired by seed: the same seed gives the same initial weights and
the same data order in every arm, so seed-to-seed variation that is common to the arms
cancels in the per-seed difference ``d_s = a_s - b_s``.

- :func:`paired_t`: mean of ``d``, its standard error ``sd(d) / sqrt(n)`` and the
  two-sided ``confidence`` interval ``mean +- t_{n-1} * SE`` (Student's paired t).
- :func:`paired_bootstrap`: a percentile interval of the mean difference when both the
  seeds and the test images are resampled (with replacement, the same draws for both arms),
  so that it carries the test set's sampling error as well as the seeds'.
- :func:`seeds_for_power`: the number of seeds a paired t-test at level ``1 - confidence``
  needs to detect a true difference ``diff`` with probability ``power`` (exact, from the
  noncentral t distribution), taking a given ``sd(d)`` (a pilot's) as the truth;
  :func:`power_at`: the power ``n`` seeds achieve. Give them the effect the claim names,
  never the observed difference: the power to detect what was observed says nothing the
  interval does not (and is about 50% whenever the result sits on the threshold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as st

__all__ = ["paired_bootstrap", "paired_t", "power_at", "seeds_for_power"]

MAX_SEEDS = 10_000


def _pairs(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"paired values need two 1-D sequences of one length, got shapes "
                         f"{a_arr.shape} and {b_arr.shape}")
    if not (np.isfinite(a_arr).all() and np.isfinite(b_arr).all()):
        raise ValueError("paired values must be finite")
    return a_arr - b_arr


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def paired_t(a: Sequence[float], b: Sequence[float], confidence: float = 0.95
             ) -> dict[str, Any]:
    """Paired t interval of ``mean(a - b)``: ``diff``, ``se``, ``ci_low``, ``ci_high``,
    ``p_value`` (two-sided, H0: no difference) and ``n``; the spread-dependent entries are
    None for fewer than two pairs."""
    _check_confidence(confidence)
    d = _pairs(a, b)
    n = len(d)
    out: dict[str, Any] = {"diff": float(d.mean()) if n else None, "se": None, "ci_low": None,
                           "ci_high": None, "p_value": None, "n": n}
    if n < 2:
        return out
    se = float(d.std(ddof=1) / math.sqrt(n))
    half = float(st.t.ppf(0.5 + confidence / 2, n - 1)) * se
    out.update(se=se, ci_low=out["diff"] - half, ci_high=out["diff"] + half)
    if se > 0:
        out["p_value"] = float(2 * st.t.sf(abs(out["diff"]) / se, n - 1))
    else:
        out["p_value"] = 1.0 if out["diff"] == 0 else 0.0
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, confidence: float = 0.95,
                     resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap interval of the mean difference of two arms judged on the same
    images: ``a`` and ``b`` are ``seeds x images`` arrays (e.g. 1 for a correct prediction,
    0 for a wrong one), row ``s`` of both from seed ``s``. Each resample draws seeds and
    images with replacement and takes ``mean(a[S][:, I]) - mean(b[S][:, I])``. Returns
    ``diff``, ``ci_low``, ``ci_high``, ``seeds``, ``images`` and ``resamples``."""
    _check_confidence(confidence)
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 2 or 0 in a_arr.shape:
        raise ValueError(f"the bootstrap needs two non-empty seeds x images arrays of one "
                         f"shape, got {a_arr.shape} and {b_arr.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    d = a_arr - b_arr
    seeds, images = d.shape
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for r in range(resamples):
        rows = rng.integers(seeds, size=seeds)
        cols = rng.integers(images, size=images)
        # mean over the resampled grid = weighted mean with the draw counts as weights
        row_w = np.bincount(rows, minlength=seeds)
        col_w = np.bincount(cols, minlength=images)
        values[r] = row_w @ d @ col_w / (seeds * images)
    low, high = np.quantile(values, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return {"diff": float(d.mean()), "ci_low": float(low), "ci_high": float(high),
            "seeds": seeds, "images": images, "resamples": resamples}


def _check_power_inputs(diff: float, sd: float, confidence: float) -> None:
    _check_confidence(confidence)
    if sd < 0 or not math.isfinite(sd) or not math.isfinite(diff):
        raise ValueError(f"sd must be finite and >= 0 and diff finite, got {sd}, {diff}")


def _power(effect: float, n: int, confidence: float) -> float:
    df = n - 1
    crit = st.t.ppf(0.5 + confidence / 2, df)
    nc = effect * math.sqrt(n)
    # the lower tail P(T_nc < -crit) taken as P(T_-nc > crit): scipy's nct.cdf returns NaN
    # there for some noncentralities above ~10 (SciPy 1.17), which made a large effect's
    # power NaN
    return float(st.nct.sf(crit, df, nc) + st.nct.sf(crit, df, -nc))


def power_at(diff: float, sd: float, n: int, confidence: float = 0.95) -> float | None:
    """The probability that a two-sided paired t-test at level ``1 - confidence`` over ``n``
    seeds rejects when the true mean difference is ``diff`` and the per-seed differences
    have standard deviation ``sd`` (noncentral t). None for ``n < 2`` (no test); 1 when
    ``sd`` is 0 and ``diff`` is not."""
    _check_power_inputs(diff, sd, confidence)
    if n < 2:
        return None
    if sd == 0:
        return 1.0 if diff != 0 else 1 - confidence
    return _power(abs(diff) / sd, n, confidence)


def seeds_for_power(diff: float, sd: float, power: float = 0.8, confidence: float = 0.95
                    ) -> int | None:
    """The smallest number of paired seeds ``n >= 2`` at which a two-sided paired t-test at
    level ``1 - confidence`` rejects with probability >= ``power`` when the true mean
    difference is ``diff`` and the per-seed differences have standard deviation ``sd``.
    None when ``diff`` is 0 or more than ``MAX_SEEDS`` would be needed; 2 when ``sd`` is 0."""
    _check_power_inputs(diff, sd, confidence)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie in (0, 1), got {power}")
    if diff == 0:
        return None
    if sd == 0:
        return 2
    effect = abs(diff) / sd
    # start from the normal approximation and walk to the exact answer
    z = st.norm.ppf(0.5 + confidence / 2) + st.norm.ppf(power)
    n = max(2, math.ceil((z / effect) ** 2))
    if n > MAX_SEEDS:
        return None
    while n > 2 and _power(effect, n - 1, confidence) >= power:
        n -= 1
    while _power(effect, n, confidence) < power:
        n += 1
        if n > MAX_SEEDS:
            return None
    return n
