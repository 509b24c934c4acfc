"""Label-budget folds for nnU-Net's splits_final.json: pure functions, no I/O.

A label-budget fold trains on a seeded subset of a standard fold's training cases and validates on
that fold's validation cases, untouched, so results at every budget are measured on the same cases
as the full-label fold. New folds are only ever appended; existing folds are never changed.

Fold numbering: new folds get the numbers len(splits), len(splits) + 1, ... in the order
(base fold ascending, budget ascending). A (base fold, budget, seed) whose cases already form a fold
(an earlier run with the same arguments, or a budget equal to the whole training set, which is the
base fold itself) reuses that fold's number and adds nothing, so re-running is a no-op.
"""
from typing import Iterable

import numpy as np

from nnunet_ssl.errors import SSLUserError


class SplitsError(SSLUserError, ValueError):
    """A bad label-budget request: a ValueError for callers, printed without traceback by the CLI."""


def _fold_range(n: int) -> str:
    return "none" if n == 0 else ("0" if n == 1 else f"0..{n - 1}")


def check_splits(splits: list[dict]) -> None:
    """nnU-Net's format: a list of {"train": [ids], "val": [ids]}."""
    if not isinstance(splits, list):
        raise SplitsError(f"splits_final.json must hold a list of folds, found {type(splits).__name__}.",
                          "restore nnU-Net's format: [{\"train\": [...], \"val\": [...]}, ...]")
    for i, fold in enumerate(splits):
        if not (isinstance(fold, dict) and isinstance(fold.get("train"), list) and isinstance(fold.get("val"), list)):
            raise SplitsError(f"fold {i} of splits_final.json is not {{\"train\": [...], \"val\": [...]}}.",
                              "restore nnU-Net's format for that fold")


def budget_subset(base_train: list[str], base_fold: int, budget: int, seed: int) -> list[str]:
    """The ``budget`` labeled cases drawn from ``base_train``, listed in base_train's order.

    One seeded permutation of the base fold's (sorted) training cases, and its first ``budget``
    entries. Taking prefixes of the same permutation nests the subsets across budgets (the 2 cases
    are among the 5, which are among the 10): a budget curve then measures the effect of more
    labels, not of different cases. The generator is seeded with (seed, base_fold) so that two
    base folds of equal size do not select the same positions; numpy's RandomState stream is frozen,
    so the same arguments give the same cases on every numpy version.
    """
    cases = sorted(base_train)
    order = np.random.RandomState([seed, base_fold]).permutation(len(cases))
    chosen = {cases[i] for i in order[:budget]}
    return [case for case in base_train if case in chosen]


def _same_cases(fold: dict, train: list[str], val: list[str]) -> bool:
    return (len(fold["train"]) == len(train) and set(fold["train"]) == set(train)
            and len(fold["val"]) == len(val) and set(fold["val"]) == set(val))


def label_budget_folds(splits: list[dict], base_folds: Iterable[int], budgets: Iterable[int], seed: int,
                       budget_folds: Iterable[int] = ()) -> tuple[list[dict], list[dict]]:
    """(splits with the label-budget folds appended, one mapping row per (base fold, budget)).

    ``splits`` is not modified; its folds are returned as they are, followed by the new ones. A row is
    {fold, base_fold, labeled, seed, train, n_val}; ``train`` is the number of training cases (equal
    to ``labeled``). ``budget_folds``: folds already known to be label-budget folds, which may not
    serve as base folds. Raises SplitsError (a ValueError) before producing anything when a budget is
    < 1 or larger than a base fold's training set, a base fold does not exist, or the seed is invalid.
    """
    check_splits(splits)
    base_folds = sorted(set(int(b) for b in base_folds))
    budgets = sorted(set(int(b) for b in budgets))
    budget_folds = set(budget_folds)
    if not base_folds:
        raise SplitsError("no base fold given.", "pass --base-folds, e.g. --base-folds 0 1 2 3 4")
    if not budgets:
        raise SplitsError("no label budget given.", "pass --labeled N [N ...], e.g. --labeled 2 5 10")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
        raise SplitsError(f"seed {seed!r} is not an integer in [0, 2**32).", "pass --seed with e.g. 0")
    for b in base_folds:
        if not 0 <= b < len(splits):
            raise SplitsError(f"base fold {b} does not exist: splits_final.json has {len(splits)} folds "
                              f"({_fold_range(len(splits))}).",
                              f"pass --base-folds with folds among {_fold_range(len(splits))}")
        if b in budget_folds:
            raise SplitsError(f"fold {b} is itself a label-budget fold and cannot be a base fold.",
                              "pass --base-folds with standard cross-validation folds (e.g. 0 1 2 3 4)")
    for budget in budgets:
        if budget < 1:
            raise SplitsError(f"label budget {budget} is not a positive number of cases.",
                              "pass --labeled with budgets of at least 1")
    smallest = min(base_folds, key=lambda b: len(splits[b]["train"]))
    n = len(splits[smallest]["train"])
    if budgets[-1] > n:
        raise SplitsError(f"label budget {budgets[-1]} is larger than the {n} training cases of base fold {smallest}.",
                          f"pass --labeled with budgets of at most {n}"
                          + (f" (the smallest training set among base folds {base_folds})" if len(base_folds) > 1
                             else ""))

    new_splits = list(splits)
    rows = []
    for b in base_folds:
        base = splits[b]
        for budget in budgets:
            train = budget_subset(base["train"], b, budget, seed)
            # the base fold first, so a budget equal to the whole training set maps to the base fold itself
            candidates = [b] + [i for i in range(len(new_splits)) if i != b]
            fold = next((i for i in candidates if _same_cases(new_splits[i], train, base["val"])), None)
            if fold is None:
                fold = len(new_splits)
                new_splits.append({"train": train, "val": list(base["val"])})
            rows.append({"fold": fold, "base_fold": b, "labeled": budget, "seed": int(seed),
                         "train": len(new_splits[fold]["train"]), "n_val": len(new_splits[fold]["val"])})
    return new_splits, rows


def stale_rows(splits: list[dict], rows: list[dict]) -> list[dict]:
    """Mapping rows that no longer describe splits: their fold is missing or holds other cases than
    (base fold, labeled, seed) give (e.g. splits_final.json was deleted and made again)."""
    stale = []
    for row in rows:
        try:
            fold, b, budget, seed = (int(row[k]) for k in ("fold", "base_fold", "labeled", "seed"))
        except (KeyError, TypeError, ValueError):
            stale.append(row)
            continue
        ok = (0 <= fold < len(splits) and 0 <= b < len(splits) and 1 <= budget <= len(splits[b]["train"])
              and 0 <= seed < 2 ** 32
              and _same_cases(splits[fold], budget_subset(splits[b]["train"], b, budget, seed), splits[b]["val"]))
        if not ok:
            stale.append(row)
    return stale


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Union of mapping rows, one per (base_fold, labeled, seed), ordered by fold."""
    merged = {(r["base_fold"], r["labeled"], r["seed"]): r for r in old}
    merged.update({(r["base_fold"], r["labeled"], r["seed"]): r for r in new})
    return sorted(merged.values(), key=lambda r: (r["fold"], r["base_fold"], r["labeled"], r["seed"]))
