"""nnUNetv2_ssl_splits: append label-budget folds to nnU-Net's splits_final.json (integration/splits.py)."""
import argparse

from nnunet_ssl.cli import run_cli


def splits_entry() -> None:
    from nnunet_ssl.integration.splits import DEFAULT_BASE_FOLDS, add_label_budget_folds
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_ssl_splits",
        description="Append label-budget folds to splits_final.json: each trains on a seeded subset of a "
                    "standard fold's training cases (nested across budgets) and validates on that fold's "
                    "validation cases. Existing folds are never changed; re-running adds nothing.")
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    parser.add_argument("--labeled", type=int, nargs="+", required=True, metavar="N",
                        help="numbers of labeled training cases (patients with --groups), e.g. --labeled 2 5 10")
    parser.add_argument("--base-folds", type=int, nargs="+", default=list(DEFAULT_BASE_FOLDS), metavar="F",
                        help="standard folds to subsample (default: 0 1 2 3 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case draw (default: 0)")
    grouping = parser.add_mutually_exclusive_group()
    grouping.add_argument("--groups", metavar="FILE.json",
                          help="JSON {case id: patient id}: --labeled counts patients, no fold splits a patient; "
                               "base folds that split one are replaced by folds made over patients (appended)")
    grouping.add_argument("--group-pattern", metavar="REGEX",
                          help="patient id = first group of REGEX in the case id, e.g. '^(patient\\d+)_'")
    args = parser.parse_args()
    run_cli(lambda: add_label_budget_folds(args.dataset, args.labeled, args.base_folds, args.seed,
                                           args.groups, args.group_pattern))
