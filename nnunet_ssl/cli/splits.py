"""nnUNetv2_ssl_splits: append label-budget folds to nnU-Net's splits_final.json.

Fold N of the file is what ``nnUNetv2_train ID CONFIG N`` trains on, so a budget fold is trained and
evaluated with the stock commands. The mapping fold -> (base fold, labeled, seed) is printed and
kept in label_budget_folds.json beside splits_final.json.
"""
import argparse
import json
import os
from os.path import basename, isdir, isfile, join

from nnunet_ssl.atomic_io import atomic_save_json
from nnunet_ssl.cli import run_cli
from nnunet_ssl.errors import SSLUserError

MAPPING_FILE = "label_budget_folds.json"
DEFAULT_BASE_FOLDS = (0, 1, 2, 3, 4)


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
                                   f"{join(folder, 'splits_final.json')} yourself")
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


def default_splits(case_ids: list[str], dataset_id: int) -> list[dict]:
    """nnU-Net's default split, exactly as nnUNetTrainer.do_split creates it when the file is missing."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    if len(case_ids) < 5:
        raise SSLUserError(f"nnU-Net's default 5-fold split needs at least 5 training cases; there are {len(case_ids)}.",
                           "write splits_final.json yourself (a list of {\"train\": [...], \"val\": [...]}) "
                           f"in $nnUNet_preprocessed, then run nnUNetv2_ssl_splits -d {dataset_id} again")
    splits = generate_crossval_split(case_ids, seed=12345, n_splits=5)
    return [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]} for s in splits]


def splits(dataset: str, budgets: list[int], base_folds=DEFAULT_BASE_FOLDS, seed: int = 0) -> list[dict]:
    """Append label-budget folds to splits_final.json (creating nnU-Net's default 5 folds first if the
    file is missing), record and print the mapping; returns this call's mapping rows."""
    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_ssl.benchmark.splits import check_splits, label_budget_folds, merge_rows, stale_rows
    from nnunet_ssl.integration.dataset import resolve_dataset_name

    name = resolve_dataset_name(dataset)
    dataset_id = int(name[7:10])
    folder = join(str(nnUNet_preprocessed), name)
    if not isdir(folder):
        raise SSLUserError(f"{name} is not planned and preprocessed (no folder {folder}).",
                           f"nnUNetv2_plan_and_preprocess -d {dataset_id}")
    splits_file = join(folder, "splits_final.json")
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
    stale = stale_rows(old, previous)
    if stale:
        raise SSLUserError(f"{mapping_file} describes folds that {splits_file} does not hold "
                           f"(e.g. {stale[0]}); the mapping belongs to an earlier splits file.",
                           f"move {mapping_file} away (results trained on those folds used other cases)")
    budget_folds = {r["fold"] for r in previous if r["fold"] != r["base_fold"]}
    new, rows = label_budget_folds(old, base_folds, budgets, seed, budget_folds=budget_folds)

    if created:
        print(created)
    if created or len(new) > len(old):
        atomic_save_json(new, splits_file, sort_keys=True)  # nnU-Net's save_json format
        print(f"wrote {splits_file}: {len(old)} existing folds unchanged, {len(new) - len(old)} added")
    else:
        print(f"{splits_file} already holds these folds; nothing added")
    merged = merge_rows(previous, rows)
    if merged != previous:
        atomic_save_json({"about": "label-budget folds of splits_final.json: fold N trains on `labeled` cases "
                                     "drawn with `seed` from base_fold's training cases and validates on "
                                     "base_fold's validation cases",
                            "folds": merged}, mapping_file, sort_keys=True)
        print(f"wrote {mapping_file}")

    added = set(range(len(old), len(new)))
    print(f"\n{'fold':>4}  {'base fold':>9}  {'labeled':>7}  {'seed':>4}  {'n train':>7}  {'n val':>5}")
    for r in rows:
        note = "new" if r["fold"] in added else ("= base fold" if r["fold"] == r["base_fold"] else "existing")
        print(f"{r['fold']:>4}  {r['base_fold']:>9}  {r['labeled']:>7}  {r['seed']:>4}  {r['train']:>7}  "
              f"{r['n_val']:>5}  {note}")
    example = next((r for r in rows if r["fold"] != r["base_fold"]), rows[0])
    print(f"\ntrain one, e.g. {example['labeled']} labeled cases of fold {example['base_fold']}:\n"
          f"  nnUNetv2_train {dataset_id} 3d_fullres {example['fold']} -tr SSLInitTrainer")
    return rows


def splits_entry() -> None:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_ssl_splits",
        description="Append label-budget folds to splits_final.json: each trains on a seeded subset of a "
                    "standard fold's training cases (nested across budgets) and validates on that fold's "
                    "validation cases. Existing folds are never changed; re-running adds nothing.")
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    parser.add_argument("--labeled", type=int, nargs="+", required=True, metavar="N",
                        help="numbers of labeled training cases, e.g. --labeled 2 5 10")
    parser.add_argument("--base-folds", type=int, nargs="+", default=list(DEFAULT_BASE_FOLDS), metavar="F",
                        help="standard folds to subsample (default: 0 1 2 3 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case draw (default: 0)")
    args = parser.parse_args()
    run_cli(lambda: splits(args.dataset, args.labeled, args.base_folds, args.seed))
