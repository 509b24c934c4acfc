"""Paired statistics of one arm against a baseline arm on the same validation cases.

Pure functions on per-case differences grouped by fold. The unit of replication in a benchmark is
the fold (a different training set and validation set); cases within a fold share one trained
model. The bootstrap therefore resamples folds, then cases within each drawn fold, so that the
interval carries both the training-to-training and the case-to-case spread.
"""
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from nnunet_ssl.blocks.health import doubling_plateau

BOOTSTRAP_SAMPLES = 10_000  # [assumption] enough for a stable 2.5/97.5 percentile at 3 decimals
CONFIDENCE = 0.95


def pooled_mean(differences_by_fold: list[np.ndarray]) -> float:
    """Mean over folds of each fold's mean difference (folds weigh equally)."""
    return float(np.mean([np.mean(d) for d in differences_by_fold]))


def hierarchical_bootstrap_ci(differences_by_fold: list[np.ndarray], samples: int = BOOTSTRAP_SAMPLES,
                              confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``pooled_mean`` under resampling folds with replacement, then the
    cases of each drawn fold with replacement."""
    rng = np.random.default_rng(seed)
    folds = [np.asarray(d, dtype=float) for d in differences_by_fold]
    n_folds = len(folds)
    estimates = np.empty(samples)
    for i in range(samples):
        drawn = rng.integers(n_folds, size=n_folds)
        estimates[i] = np.mean([folds[f][rng.integers(len(folds[f]), size=len(folds[f]))].mean() for f in drawn])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the pooled per-case differences (NaN when every
    difference is zero: there is nothing to rank)."""
    from scipy.stats import wilcoxon
    differences = np.asarray(differences, dtype=float)
    if not np.any(differences != 0):
        return float("nan")
    return float(wilcoxon(differences).pvalue)


@dataclass(frozen=True)
class Verdict:
    """What an arm's interval against its baseline says, as values (report.verdict_text says it in words): the
    interval's direction, the folds it rests on against the folds a verdict needs and, once weighed against the
    noise floor (``against_noise_floor``), the floor's band and whether the mean difference lies beyond it."""
    direction: Literal["better", "worse", "none"]  # better / worse: the interval excludes 0; none: it holds 0
    folds: int = 1
    folds_needed: int = 1
    noise_band: float | None = None  # retraining_band over these folds; None: not weighed (no floor measured)
    beyond_noise_floor: bool | None = None

    @property
    def enough_folds(self) -> bool:
        return self.folds >= self.folds_needed

    @property
    def decided(self) -> bool:
        """better or worse, from enough folds (whatever the noise floor says)."""
        return self.enough_folds and self.direction != "none"

    @property
    def finding(self) -> str:
        """'better' / 'worse' for a decided verdict beyond the noise floor, or with no floor measured; 'none'
        otherwise (no difference, within the floor, too few folds)."""
        return self.direction if self.decided and self.beyond_noise_floor is not False else "none"


def verdict(ci: tuple[float, float], folds: int = 1, folds_needed: int = 1) -> Verdict:
    """What the interval says: better or worse only when it excludes zero (a verdict only from ``folds_needed``)."""
    low, high = ci
    direction = "better" if low > 0 else "worse" if high < 0 else "none"
    return Verdict(direction, folds, folds_needed)


# Folds a benchmark row needs before its interval gives a verdict [assumption: the protocol's 3 base folds].
# With fewer, resampling folds hardly varies the training run, so the interval is about as narrow as
# case-to-case spread alone, while retraining the same fold moved fold means by up to 0.1 Dice on hippocampus
# (docs/records/hippocampus_protocol_2026-12-02.md).
MIN_FOLDS_FOR_VERDICT = 3


def compare(differences_by_fold: list[np.ndarray], seed: int = 0, min_folds: int = 1) -> dict:
    """Everything a table row needs about one arm against its baseline; below ``min_folds`` folds the
    interval is reported but gives no verdict (``Verdict.enough_folds``)."""
    pooled = np.concatenate([np.asarray(d, dtype=float) for d in differences_by_fold])
    ci = hierarchical_bootstrap_ci(differences_by_fold, seed=seed)
    n_folds = len(differences_by_fold)
    return {"mean": pooled_mean(differences_by_fold), "ci_low": ci[0], "ci_high": ci[1],
            "wilcoxon_p": wilcoxon_p(pooled), "verdict": verdict(ci, n_folds, min_folds), "folds": n_folds,
            "cases": int(pooled.size), "cases_better": int((pooled > 0).sum())}


def retraining_spread(floor_fold_differences: list[float]) -> float:
    """One fold's spread s from retraining alone: the noise floor's per-fold differences (scratch trained
    twice on the same folds and cases: nothing differs but the run, so their expected mean is 0), s^2 the
    mean of their squares, with as many degrees of freedom as folds."""
    return float(np.sqrt(np.mean(np.asarray(floor_fold_differences, dtype=float) ** 2)))


def _t_quantile(degrees_of_freedom: int, confidence: float) -> float:
    from scipy.stats import t
    return float(t.ppf(0.5 + confidence / 2, df=degrees_of_freedom))


def retraining_band(floor_fold_differences: list[float], n_folds: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the range an arm's mean difference over ``n_folds`` folds reaches by retraining alone:
    t(df) * s / sqrt(n_folds) with s = ``retraining_spread``. The per-case interval cannot carry this spread
    with 3 folds: on hippocampus with 2 labels scratch trained again moved one fold by 0.086 while every
    per-case interval was narrower than that."""
    return (_t_quantile(len(floor_fold_differences), confidence) * retraining_spread(floor_fold_differences)
            / float(np.sqrt(n_folds)))


def folds_to_resolve(floor_fold_differences: list[float], difference: float, confidence: float = CONFIDENCE) -> int:
    """The fewest folds over which a mean difference of ``difference`` lies beyond ``retraining_band``
    (band over n folds = band over one fold / sqrt(n))."""
    ratio = retraining_band(floor_fold_differences, 1, confidence) / difference
    return int(np.floor(ratio ** 2)) + 1


def against_noise_floor(said: Verdict, mean: float, band: float) -> Verdict:
    """A better / worse verdict qualified by ``retraining_band``: a difference no larger than retraining
    alone moves is not read as a finding. Any other verdict stays as it is."""
    if not said.decided:
        return said
    return replace(said, noise_band=band, beyond_noise_floor=abs(mean) > band)


PLATEAU_GAIN = 0.01  # Dice a doubling of the training length must add to count as still rising [issue 12]


def plateau_length(curve: dict[int, float], gain: float = PLATEAU_GAIN) -> int | None:
    """The shortest length L whose doubling adds less than ``gain`` mean Dice (curve: {iterations:
    mean Dice}, with 2L measured); None while every measured doubling still adds more."""
    return doubling_plateau(curve, gain)
