"""Label-budget folds for nnU-Net's splits_final.json: pure functions, no I/O.

A label-budget fold trains on a seeded subset of a standard fold's training cases and validates on
that fold's validation cases, untouched, so results at every budget are measured on the same cases
as the full-label fold. New folds are only ever appended; existing folds are never changed.

Fold numbering: new folds get the numbers len(splits), len(splits) + 1, ... in the order
(base fold ascending, budget ascending). A (base fold, budget, seed) whose cases already form a fold
(an earlier run with the same arguments, or a budget equal to the whole training set, which is the
base fold itself) reuses that fold's number and adds nothing, so re-running is a no-op.

Grouped folds: with several volumes per patient (cine ED/ES frames, follow-up scans) ``groups``
maps each case to its patient; a budget then counts patients (all of a drawn patient's cases
train), and a base fold must never have a patient on both sides.
"""
import re
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


def grouped_budget_subset(base_train: list[str], base_fold: int, budget: int, seed: int,
                          groups: dict[str, str]) -> list[str]:
    """Every case of ``budget`` patients drawn from the base fold's training patients, listed in
    base_train's order; the same seeded permutation as budget_subset, over sorted patient ids, so
    grouped budgets nest too."""
    patients = sorted({groups[c] for c in base_train})
    chosen = set(budget_subset(patients, base_fold, budget, seed))
    return [case for case in base_train if groups[case] in chosen]


def split_patients(fold: dict, groups: dict[str, str]) -> list[str]:
    """Patients with cases on both sides of a fold (training and validation), sorted."""
    return sorted({groups[c] for c in fold["train"]} & {groups[c] for c in fold["val"]})


def expand_patient_folds(patient_folds: list[dict], groups: dict[str, str]) -> list[dict]:
    """Folds over patient ids -> folds over their cases (sorted), so a patient is on one side only."""
    cases_of = {}
    for case in sorted(groups):
        cases_of.setdefault(groups[case], []).append(case)
    return [{side: sorted(c for p in fold[side] for c in cases_of[str(p)]) for side in ("train", "val")}
            for fold in patient_folds]


def check_groups(groups, case_ids: list[str], source: str) -> dict[str, str]:
    """``groups`` (read from ``source``) as {case: patient} for exactly ``case_ids``; SplitsError for
    anything else: not a mapping, a patient that is not a string or integer, unknown cases, cases
    without a patient."""
    example = '{"patient001_frame01": "patient001", "patient001_frame12": "patient001", ...}'
    if not isinstance(groups, dict):
        raise SplitsError(f"{source} must map each case id to its patient id, found a JSON {type(groups).__name__}.",
                          f"write it as {example}")
    bad = [case for case, patient in groups.items()
           if isinstance(patient, bool) or not isinstance(patient, (str, int)) or str(patient) == ""]
    if bad:
        raise SplitsError(f"{source} gives {len(bad)} case(s) no usable patient id (e.g. {bad[0]!r}: "
                          f"{groups[bad[0]]!r}); a patient id is a non-empty string or an integer.",
                          f"write it as {example}")
    unknown = sorted(set(groups) - set(case_ids))
    if unknown:
        raise SplitsError(f"{source} names {len(unknown)} case(s) that are not training cases of this dataset "
                          f"(e.g. {unknown[:3]}).", "use the case ids of splits_final.json / imagesTr "
                                                    "(file names without _0000 and the ending)")
    missing = sorted(set(case_ids) - set(groups))
    if missing:
        raise SplitsError(f"{len(missing)} training case(s) have no patient in {source} (e.g. {missing[:3]}); "
                          "every case needs one, or a fold could split a patient.",
                          "add them (a case alone is its own patient: give it its own id)")
    return {case: str(groups[case]) for case in case_ids}


def groups_from_pattern(case_ids: list[str], pattern: str) -> dict[str, str]:
    """{case: patient} where the patient is the first group of ``pattern`` (re.search) in the case id."""
    fix = "e.g. --group-pattern '^(patient\\d+)_' for cases named patient001_frame01"
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise SplitsError(f"--group-pattern '{pattern}' is not a regular expression: {e}.", fix) from None
    if regex.groups < 1:
        raise SplitsError(f"--group-pattern '{pattern}' has no group ( ... ) to take the patient id from.", fix)
    groups, unmatched = {}, []
    for case in case_ids:
        match = regex.search(case)
        if match is None or not match.group(1):
            unmatched.append(case)
        else:
            groups[case] = match.group(1)
    if unmatched:
        raise SplitsError(f"{len(unmatched)} of {len(case_ids)} case(s) do not match --group-pattern '{pattern}' "
                          f"with a non-empty first group (e.g. {unmatched[:3]}); every case needs a patient.",
                          fix + ", or --groups FILE.json")
    return groups


def _same_cases(fold: dict, train: list[str], val: list[str]) -> bool:
    return (len(fold["train"]) == len(train) and set(fold["train"]) == set(train)
            and len(fold["val"]) == len(val) and set(fold["val"]) == set(val))


def label_budget_folds(splits: list[dict], base_folds: Iterable[int], budgets: Iterable[int], seed: int,
                       budget_folds: Iterable[int] = (), groups: dict[str, str] | None = None
                       ) -> tuple[list[dict], list[dict]]:
    """(splits with the label-budget folds appended, one mapping row per (base fold, budget)).

    ``splits`` is not modified; its folds are returned as they are, followed by the new ones. A row is
    {fold, base_fold, labeled, seed, train, n_val}; ``train`` is the number of training cases (equal
    to ``labeled``). ``budget_folds``: folds already known to be label-budget folds, which may not
    serve as base folds. Raises SplitsError (a ValueError) before producing anything when a budget is
    < 1 or larger than a base fold's training set, a base fold does not exist, or the seed is invalid.

    With ``groups`` ({case: patient}) budgets count patients (``labeled``; ``train`` counts their
    cases, and the row says ``"grouped": true``), and a base fold that splits a patient is refused.
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
        if groups is not None and split_patients(splits[b], groups):
            shared = split_patients(splits[b], groups)
            raise SplitsError(f"base fold {b} has {len(shared)} patient(s) in training and validation "
                              f"(e.g. {shared[0]!r}).", "use grouped base folds (nnUNetv2_ssl_splits --groups)")
    unit = "cases" if groups is None else "patients"
    for budget in budgets:
        if budget < 1:
            raise SplitsError(f"label budget {budget} is not a positive number of {unit}.",
                              "pass --labeled with budgets of at least 1")

    def n_units(b: int) -> int:
        return len(splits[b]["train"]) if groups is None else len({groups[c] for c in splits[b]["train"]})

    smallest = min(base_folds, key=n_units)
    n = n_units(smallest)
    if budgets[-1] > n:
        raise SplitsError(f"label budget {budgets[-1]} is larger than the {n} training {unit} of base fold {smallest}.",
                          f"pass --labeled with budgets of at most {n}"
                          + (f" (the smallest training set among base folds {base_folds})" if len(base_folds) > 1
                             else ""))

    new_splits = list(splits)
    rows = []
    for b in base_folds:
        base = splits[b]
        for budget in budgets:
            train = (budget_subset(base["train"], b, budget, seed) if groups is None
                     else grouped_budget_subset(base["train"], b, budget, seed, groups))
            # the base fold first, so a budget equal to the whole training set maps to the base fold itself
            candidates = [b] + [i for i in range(len(new_splits)) if i != b]
            fold = next((i for i in candidates if _same_cases(new_splits[i], train, base["val"])), None)
            if fold is None:
                fold = len(new_splits)
                new_splits.append({"train": train, "val": list(base["val"])})
            rows.append({"fold": fold, "base_fold": b, "labeled": budget, "seed": int(seed),
                         "train": len(new_splits[fold]["train"]), "n_val": len(new_splits[fold]["val"]),
                         **({"grouped": True} if groups is not None else {})})
    return new_splits, rows


def stale_rows(splits: list[dict], rows: list[dict], groups: dict[str, str] | None = None) -> list[dict]:
    """Mapping rows that no longer describe splits: their fold is missing or holds other cases than
    (base fold, labeled, seed) give (e.g. splits_final.json was deleted and made again). Grouped rows
    are checked with ``groups`` (the mapping's own); without it they are stale."""
    stale = []
    for row in rows:
        try:
            fold, b, budget, seed = (int(row[k]) for k in ("fold", "base_fold", "labeled", "seed"))
        except (KeyError, TypeError, ValueError):
            stale.append(row)
            continue
        grouped = bool(row.get("grouped"))
        ok = (0 <= fold < len(splits) and 0 <= b < len(splits) and 1 <= budget <= len(splits[b]["train"])
              and 0 <= seed < 2 ** 32 and (not grouped or (groups is not None
                                                           and set(splits[b]["train"]) <= set(groups))))
        if ok:
            train = (grouped_budget_subset(splits[b]["train"], b, budget, seed, groups) if grouped
                     else budget_subset(splits[b]["train"], b, budget, seed))
            ok = _same_cases(splits[fold], train, splits[b]["val"])
        if not ok:
            stale.append(row)
    return stale


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Union of mapping rows, one per (base_fold, labeled, seed, grouped), ordered by fold."""
    def key(r: dict) -> tuple:
        return r["base_fold"], r["labeled"], r["seed"], bool(r.get("grouped"))

    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})
    return sorted(merged.values(), key=lambda r: (r["fold"], r["base_fold"], r["labeled"], r["seed"]))
