"""Everything that reads or writes nnU-Net's splits_final.json: nnU-Net's default split, grouped
base folds, label-budget folds and their mapping file, the demo's fold.

Fold N of the file is what ``nnUNetv2_train ID CONFIG N`` trains on, so a budget fold is trained and
evaluated with the stock commands. Folds are only ever appended; an existing fold never changes.
The arithmetic (which cases go where) is in data/folds.py; this module adds the files.
"""
import json
import os
from dataclasses import dataclass
from os.path import basename, isdir, isfile, join

from nnunet_ssl.atomic_io import atomic_save_json
from nnunet_ssl.data.folds import (SplitsError, check_groups, check_splits, expand_patient_folds,
                                   groups_from_pattern, label_budget_folds, merge_rows, split_patients, stale_rows)
from nnunet_ssl.errors import SSLUserError

SPLITS_FILE = "splits_final.json"
MAPPING_FILE = "label_budget_folds.json"
DEFAULT_BASE_FOLDS = (0, 1, 2, 3, 4)
NNUNET_SPLIT_SEED, NNUNET_N_FOLDS = 12345, 5  # [nnU-Net: nnUNetTrainer.do_split]
MAPPING_ABOUT = ("label-budget folds of splits_final.json: fold N trains on `labeled` cases (patients when "
                 "`grouped`) drawn with `seed` from base_fold's training cases and validates on base_fold's "
                 "validation cases; `groups` maps case -> patient, `grouped_base_folds` are the folds made "
                 "over patients")


def _load_json(path: str, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SSLUserError(f"cannot read {what} {path}: {e}", f"repair or remove {path}") from None


def case_identifiers(folder: str, dataset_id: int) -> tuple[list[str], str]:
    """All training case ids, sorted as nnU-Net's trainer sorts them, and where they came from.

    nnUNetTrainer.do_split takes them from the configuration's preprocessed data folder; every
    configuration holds the same cases (all training cases of the raw dataset), so any folder with
    preprocessed cases will do. Before preprocessing has written cases, the raw dataset's training
    cases (as dataset.json lists them) are the ones preprocessing will write.
    """
    import numpy as np
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    found = {}
    for sub in sorted(os.listdir(folder)):
        path = join(folder, sub)
        if isdir(path) and any(f.endswith(".pkl") for f in os.listdir(path)):
            try:
                found[sub] = sorted(infer_dataset_class(path).get_identifiers(path))
            except (AssertionError, KeyError):
                continue
    if found:
        first, ids = next(iter(found.items()))
        for sub, other in found.items():
            if other != ids:
                raise SSLUserError(f"the preprocessed folders of {basename(folder)} hold different cases "
                                   f"({first}: {len(ids)}, {sub}: {len(other)}); preprocessing may be unfinished.",
                                   f"finish preprocessing (nnUNetv2_preprocess -d {dataset_id}), or write "
                                   f"{join(folder, SPLITS_FILE)} yourself")
        return list(np.sort(ids)), f"the preprocessed cases in {join(folder, first)}"

    dataset_json_file = join(folder, "dataset.json")
    not_preprocessed = SSLUserError(f"{basename(folder)} has no preprocessed cases in {folder} to split.",
                                    f"nnUNetv2_plan_and_preprocess -d {dataset_id}")
    if not isfile(dataset_json_file):
        raise not_preprocessed
    dataset_json = _load_json(dataset_json_file, "dataset.json")
    if "dataset" in dataset_json:
        return list(np.sort(list(dataset_json["dataset"]))), f"the training cases listed in {dataset_json_file}"
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder
    images = join(str(nnUNet_raw), basename(folder), "imagesTr") if nnUNet_raw.is_set() else None
    if images is None or not isdir(images) or "file_ending" not in dataset_json:
        raise not_preprocessed
    ids = [str(i) for i in get_identifiers_from_splitted_dataset_folder(images, dataset_json["file_ending"])]
    if not ids:
        raise not_preprocessed
    return list(np.sort(ids)), f"the raw training cases in {images}"


def _crossval(ids: list[str]) -> list[dict]:
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    return [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]}
            for s in generate_crossval_split(ids, seed=NNUNET_SPLIT_SEED, n_splits=NNUNET_N_FOLDS)]


def default_splits(case_ids: list[str], dataset_id: int) -> list[dict]:
    """nnU-Net's default split, exactly as nnUNetTrainer.do_split creates it when the file is missing."""
    if len(case_ids) < NNUNET_N_FOLDS:
        raise SSLUserError(f"nnU-Net's default 5-fold split needs at least 5 training cases; there are {len(case_ids)}.",
                           "write splits_final.json yourself (a list of {\"train\": [...], \"val\": [...]}) "
                           f"in $nnUNet_preprocessed, then run nnUNetv2_ssl_splits -d {dataset_id} again")
    return _crossval(case_ids)


def grouped_splits(groups: dict[str, str]) -> list[dict]:
    """nnU-Net's default split made over patients instead of cases (the same KFold, seed 12345, on
    the sorted patient ids), each patient's cases on its patient's side."""
    patients = sorted(set(groups.values()))
    if len(patients) < NNUNET_N_FOLDS:
        raise SplitsError(f"grouped 5-fold cross-validation needs at least 5 patients; the groups give "
                          f"{len(patients)}.", "check the groups (each patient id groups that patient's cases)")
    return expand_patient_folds(_crossval(patients), groups)


def read_groups(case_ids: list[str], groups_file: str | None = None, group_pattern: str | None = None
                ) -> dict[str, str] | None:
    """{case: patient} from a JSON file or a case-name pattern (not both), checked against the cases."""
    if groups_file and group_pattern:
        raise SSLUserError("--groups and --group-pattern were both given.", "pass one of them")
    if group_pattern:
        return groups_from_pattern(case_ids, group_pattern)
    if groups_file:
        if not isfile(groups_file):
            raise SSLUserError(f"groups file {groups_file} " + ("is a folder, not a file." if isdir(groups_file)
                                                               else "does not exist."),
                               "pass --groups with a JSON file mapping each case id to its patient id")
        return check_groups(_load_json(groups_file, "groups file"), case_ids, groups_file)
    return None


def _grouped_base_folds(splits: list[dict], groups: dict[str, str], requested: list[int], derived: set[int]
                        ) -> tuple[list[dict], dict[int, int], list[int], str]:
    """(splits, {requested base fold: fold used}, the grouped folds' numbers or [], what was done).

    The rule: requested folds that exist, are not budget folds and never split a patient are used
    as they are. Otherwise every request k means grouped fold k (grouped_splits), appended to the
    splits unless a fold with exactly its cases is there already."""
    usable = [b for b in requested if 0 <= b < len(splits) and b not in derived]
    broken = [b for b in usable if split_patients(splits[b], groups)]
    if len(usable) == len(requested) and not broken:
        return splits, {b: b for b in requested}, [], "the base folds keep every patient on one side: used as they are"
    grouped = grouped_splits(groups)
    unknown = [b for b in requested if not 0 <= b < len(grouped)]
    if unknown:
        raise SplitsError(f"grouped base fold {unknown[0]} does not exist: there are {len(grouped)} grouped folds "
                          f"(0..{len(grouped) - 1}).", "pass --base-folds with folds among 0..4")
    new = list(splits)
    numbers = []
    for fold in grouped:
        same = next((i for i, f in enumerate(new) if sorted(f["train"]) == fold["train"]
                     and sorted(f["val"]) == fold["val"]), None)
        if same is None:
            same = len(new)
            new.append(fold)
        numbers.append(same)
    reason = (f"fold {broken[0]} splits patient {split_patients(splits[broken[0]], groups)[0]!r} between training "
              f"and validation" if broken else f"base fold(s) {sorted(set(requested) - set(usable))} are not "
                                               f"standard folds")
    return new, {b: numbers[b] for b in requested}, numbers, (
        f"{reason}; so base fold k is grouped fold k (nnU-Net's 5-fold split made over patients, folds "
        f"{numbers} of {SPLITS_FILE}): " + ", ".join(f"{k} -> fold {numbers[k]}" for k in sorted(set(requested))))


@dataclass
class BudgetFoldPlan:
    """What add_label_budget_folds would write, computed without writing (so callers can refuse first)."""
    dataset_id: int
    splits_file: str
    mapping_file: str
    old: list[dict]  # splits_final.json as it is (or nnU-Net's default split when missing)
    new: list[dict]  # with this call's folds appended
    mapping: dict  # label_budget_folds.json as it is
    updated: dict  # as it would be written
    rows: list[dict]  # this call's mapping rows
    created: str | None  # why the splits file is created, if it is
    grouped_note: str | None
    grouped: bool

    @property
    def changes_splits(self) -> bool:
        return self.created is not None or len(self.new) > len(self.old)

    def validation_cases(self, fold: int) -> list[str]:
        return list(self.new[fold]["val"])


def add_label_budget_folds(dataset: str, budgets: list[int], base_folds=DEFAULT_BASE_FOLDS, seed: int = 0,
                           groups_file: str | None = None, group_pattern: str | None = None) -> list[dict]:
    """Append label-budget folds to splits_final.json (creating nnU-Net's default 5 folds first if the
    file is missing), record and print the mapping; returns this call's mapping rows.

    With groups (case -> patient, from ``groups_file`` or ``group_pattern``) budgets count patients
    and the base folds are grouped: see _grouped_base_folds; nnU-Net's per-case folds stay as they are.
    """
    return write_label_budget_folds(plan_label_budget_folds(dataset, budgets, base_folds, seed, groups_file,
                                                            group_pattern))


def plan_label_budget_folds(dataset: str, budgets: list[int], base_folds=DEFAULT_BASE_FOLDS, seed: int = 0,
                            groups_file: str | None = None, group_pattern: str | None = None) -> BudgetFoldPlan:
    """add_label_budget_folds without writing or printing: every check, and the folds it would add."""
    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_ssl.integration.dataset import dataset_id_of, resolve_dataset_name

    name = resolve_dataset_name(dataset)
    dataset_id = dataset_id_of(name)
    folder = join(str(nnUNet_preprocessed), name)
    if not isdir(folder):
        raise SSLUserError(f"{name} is not planned and preprocessed (no folder {folder}).",
                           f"nnUNetv2_plan_and_preprocess -d {dataset_id}")
    splits_file = join(folder, SPLITS_FILE)
    mapping_file = join(folder, MAPPING_FILE)

    if isfile(splits_file):
        old = _load_json(splits_file, "splits file")
        check_splits(old)
        created = None
    else:
        ids, source = case_identifiers(folder, dataset_id)
        old = default_splits(ids, dataset_id)
        created = f"created nnU-Net's default 5-fold split of {len(ids)} cases (seed 12345, as nnUNetv2_train " \
                  f"would) from {source}"

    mapping = _load_json(mapping_file, "mapping") if isfile(mapping_file) else {"folds": []}
    previous = mapping.get("folds") if isinstance(mapping, dict) else None
    if not isinstance(previous, list) or not all(isinstance(r, dict) for r in previous):
        raise SSLUserError(f"{mapping_file} is not a label-budget mapping ({{\"folds\": [...]}}).",
                           f"repair or move {mapping_file} away")
    old_groups = mapping.get("groups")
    stale = stale_rows(old, previous, old_groups)
    if stale:
        raise SSLUserError(f"{mapping_file} describes folds that {splits_file} does not hold "
                           f"(e.g. {stale[0]}); the mapping belongs to an earlier splits file.",
                           f"move {mapping_file} away (results trained on those folds used other cases)")
    all_cases = sorted({c for fold in old for side in ("train", "val") for c in fold[side]})
    groups = read_groups(all_cases, groups_file, group_pattern)
    if groups is not None and old_groups is not None and groups != old_groups:
        changed = sorted(c for c in groups if old_groups.get(c) != groups[c])
        raise SSLUserError(f"these groups differ from the ones {mapping_file} was made with "
                           f"(e.g. case {changed[0]!r}: {old_groups.get(changed[0])!r} there, {groups[changed[0]]!r} "
                           f"now); folds made with both would not agree on who is one patient.",
                           f"use the same groups, or move {mapping_file} and the folds it lists away")
    budget_folds = {r["fold"] for r in previous if r["fold"] != r["base_fold"]}
    used, grouped_numbers, grouped_note, with_base = {int(b): int(b) for b in base_folds}, [], None, old
    if groups is not None:
        with_base, used, grouped_numbers, grouped_note = _grouped_base_folds(old, groups, sorted(set(used)),
                                                                             budget_folds)
    new, rows = label_budget_folds(with_base, sorted(set(used.values())), budgets, seed, budget_folds=budget_folds,
                                   groups=groups)
    merged = merge_rows(previous, rows)
    kept_groups = groups if groups is not None else old_groups
    grouped_base = sorted(set(mapping.get("grouped_base_folds", [])) | set(grouped_numbers))
    updated = {"about": MAPPING_ABOUT, "folds": merged, **({"groups": kept_groups} if kept_groups else {}),
               **({"grouped_base_folds": grouped_base} if grouped_base else {})}
    return BudgetFoldPlan(dataset_id, splits_file, mapping_file, old, new, mapping, updated, rows, created,
                          grouped_note, groups is not None)


def write_label_budget_folds(plan: BudgetFoldPlan) -> list[dict]:
    """Write what plan_label_budget_folds planned (nothing when the files hold it already), print the table."""
    old, new, rows, dataset_id = plan.old, plan.new, plan.rows, plan.dataset_id
    splits_file, mapping_file = plan.splits_file, plan.mapping_file
    if plan.created:
        print(plan.created)
    if plan.grouped_note:
        print(plan.grouped_note)
    if plan.changes_splits:
        atomic_save_json(new, splits_file, sort_keys=True)  # nnU-Net's save_json format
        print(f"wrote {splits_file}: {len(old)} existing folds unchanged, {len(new) - len(old)} added")
    else:
        print(f"{splits_file} already holds these folds; nothing added")
    if plan.updated != plan.mapping:
        atomic_save_json(plan.updated, mapping_file, sort_keys=True)
        print(f"wrote {mapping_file}")

    added = set(range(len(old), len(new)))
    grouped = plan.grouped
    unit = "patients" if grouped else "labeled"
    print(f"\n{'fold':>4}  {'base fold':>9}  {unit:>8}  {'seed':>4}  {'n train':>7}  {'n val':>5}")
    for r in rows:
        note = "new" if r["fold"] in added else ("= base fold" if r["fold"] == r["base_fold"] else "existing")
        print(f"{r['fold']:>4}  {r['base_fold']:>9}  {r['labeled']:>8}  {r['seed']:>4}  {r['train']:>7}  "
              f"{r['n_val']:>5}  {note}")
    example = next((r for r in rows if r["fold"] != r["base_fold"]), rows[0])
    what = "patients" if grouped else "labeled cases"
    print(f"\ntrain one, e.g. {example['labeled']} {what} of fold {example['base_fold']}:\n"
          f"  nnUNetv2_train {dataset_id} 3d_fullres {example['fold']} -tr SSLInitTrainer")
    return rows


def write_single_fold(preprocessed_root: str, dataset_name: str, split: dict) -> dict:
    """The demo's split: fold 0 = ``split``. An existing file with another fold 0 is refused, never changed."""
    path = join(preprocessed_root, dataset_name, SPLITS_FILE)
    if isfile(path):
        existing = _load_json(path, "splits file")
        if existing[:1] != [split]:
            raise SSLUserError(f"{path} exists with another fold 0; the demo does not overwrite it.",
                               "run the demo with --workdir pointing to a fresh folder")
        return split
    atomic_save_json([split], path)
    return split
