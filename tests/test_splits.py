"""Label-budget folds: subsets of a standard fold's training cases, its validation cases untouched,
nested across budgets, seeded, idempotent, appended only; and the nnUNetv2_ssl_splits command."""
import copy
import json
import os
import re
import subprocess

import pytest
from conftest import read_json, run_entry, script, write_minimal_preprocessed

from nnunet_ssl.cli.splits import splits_entry
from nnunet_ssl.data.folds import budget_subset, label_budget_folds, stale_rows

CASES = [f"case_{i:03d}" for i in range(40)]
NAME = "Dataset321_Synthetic"


def _standard_splits(cases=CASES) -> list[dict]:
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    return [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]}
            for s in generate_crossval_split(sorted(cases), seed=12345, n_splits=5)]


# ---------------------------------------------------------------- the pure function

def test_budget_folds_are_appended_subsets_of_the_base_fold_with_its_validation_untouched():
    splits = _standard_splits()
    before = copy.deepcopy(splits)
    new, rows = label_budget_folds(splits, [0, 1, 2, 3, 4], [2, 5, 10], seed=0)
    assert splits == before  # input not modified
    assert json.dumps(new[:5]) == json.dumps(before)  # old folds byte-identical
    assert len(new) == 5 + 5 * 3
    assert [r["fold"] for r in rows] == list(range(5, 20))  # (base fold, budget) ascending, from len(splits)
    for r in rows:
        fold, base = new[r["fold"]], splits[r["base_fold"]]
        assert r["fold"] == 5 + 3 * r["base_fold"] + [2, 5, 10].index(r["labeled"])
        assert r["seed"] == 0 and r["train"] == r["labeled"] == len(fold["train"]) == len(set(fold["train"]))
        assert set(fold["train"]) <= set(base["train"])
        assert fold["val"] == base["val"] and r["n_val"] == len(base["val"])
        assert fold["train"] == [c for c in base["train"] if c in fold["train"]]  # listed in the base's order


def test_budgets_are_nested_for_the_same_base_fold_and_seed():
    new, rows = label_budget_folds(_standard_splits(), [0, 3], [10, 2, 5], seed=7)  # order of budgets is irrelevant
    for base in (0, 3):
        sets = [set(new[r["fold"]]["train"]) for r in rows if r["base_fold"] == base]
        assert [len(s) for s in sets] == [2, 5, 10]
        assert sets[0] < sets[1] < sets[2]


def test_same_seed_reproduces_the_cases_and_other_seeds_draw_others():
    splits = _standard_splits()
    assert label_budget_folds(splits, [0], [10], 0) == label_budget_folds(copy.deepcopy(splits), [0], [10], 0)
    drawn = {tuple(label_budget_folds(splits, [0], [10], seed)[0][-1]["train"]) for seed in range(5)}
    assert len(drawn) == 5
    # base folds of equal size do not pick the same positions of their sorted training cases
    train0, train1 = sorted(splits[0]["train"]), sorted(splits[1]["train"])
    positions = [{train.index(c) for c in budget_subset(train, b, 10, 0)} for b, train in ((0, train0), (1, train1))]
    assert positions[0] != positions[1]


def test_rerunning_adds_nothing_and_reuses_the_fold_numbers():
    splits = _standard_splits()
    once, rows = label_budget_folds(splits, [0, 1], [2, 5], seed=0)
    twice, rows_again = label_budget_folds(once, [0, 1], [2, 5], seed=0)
    assert twice == once and rows_again == rows
    # a new budget is appended after everything there is; the others keep their numbers
    more, rows_more = label_budget_folds(once, [0, 1], [2, 5, 8], seed=0)
    assert more[:len(once)] == once and len(more) == len(once) + 2
    assert [(r["base_fold"], r["labeled"], r["fold"]) for r in rows_more] == [
        (0, 2, 5), (0, 5, 6), (0, 8, 9), (1, 2, 7), (1, 5, 8), (1, 8, 10)]
    assert set(more[6]["train"]) < set(more[9]["train"])  # still nested with the earlier draw
    # the whole training set is the base fold itself
    full, rows_full = label_budget_folds(splits, [2], [len(splits[2]["train"])], seed=0)
    assert full == splits and rows_full[0]["fold"] == 2


@pytest.mark.parametrize("base_folds, budgets, seed, message", [
    ([0], [33], 0, "label budget 33 is larger than the 32 training cases of base fold 0"),
    ([0, 1], [0, 2], 0, "label budget 0 is not a positive number"),
    ([0], [-1], 0, "label budget -1 is not a positive number"),
    ([5], [2], 0, "base fold 5 does not exist: splits_final.json has 5 folds (0..4)"),
    ([-1], [2], 0, "base fold -1 does not exist"),
    ([0], [2], -3, "seed -3 is not an integer"),
    ([], [2], 0, "no base fold given"),
])
def test_bad_requests_are_value_errors_with_a_fix(base_folds, budgets, seed, message):
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        label_budget_folds(_standard_splits(), base_folds, budgets, seed)
    assert e.value.fix


def test_budget_folds_cannot_be_base_folds_and_malformed_splits_are_refused():
    new, rows = label_budget_folds(_standard_splits(), [0], [5], 0)
    with pytest.raises(ValueError, match="fold 5 is itself a label-budget fold"):
        label_budget_folds(new, [5], [2], 0, budget_folds={r["fold"] for r in rows})
    with pytest.raises(ValueError, match="fold 1 of splits_final.json"):
        label_budget_folds([{"train": ["a"], "val": ["b"]}, {"train": ["a"]}], [0], [1], 0)


def test_stale_mapping_rows_are_found():
    new, rows = label_budget_folds(_standard_splits(), [0, 1], [3], 0)
    assert stale_rows(new, rows) == []
    tampered = [{**rows[0], "seed": 1}, {**rows[1], "fold": 99}]
    assert stale_rows(new, tampered) == tampered


# ---------------------------------------------------------------- the command

def _preprocessed(env: dict, splits: list[dict] | None = None, case_ids: list[str] = ()) -> str:
    return write_minimal_preprocessed(env, NAME, case_ids, "MRI", {"background": 0, "blob": 1}, splits)


def test_command_appends_folds_writes_and_prints_the_mapping(nnunet_env):
    own = [{"train": CASES[:10], "val": CASES[10:14]}, {"train": CASES[4:16], "val": CASES[:4]},
           {"train": CASES[:12], "val": CASES[12:16]}]  # a user's own 3-fold split
    folder = _preprocessed(nnunet_env, own)
    result = subprocess.run([script("nnUNetv2_ssl_splits"), "-d", "321", "--labeled", "5", "2",
                             "--base-folds", "2", "0", "--seed", "3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    splits = read_json(folder, "splits_final.json")
    assert splits[:3] == own and len(splits) == 7
    mapping = read_json(folder, "label_budget_folds.json")["folds"]
    assert [(r["fold"], r["base_fold"], r["labeled"], r["seed"]) for r in mapping] == [
        (3, 0, 2, 3), (4, 0, 5, 3), (5, 2, 2, 3), (6, 2, 5, 3)]
    for r in mapping:
        assert splits[r["fold"]]["train"] == budget_subset(own[r["base_fold"]]["train"], r["base_fold"], r["labeled"], 3)
        assert splits[r["fold"]]["val"] == own[r["base_fold"]]["val"]
    out = result.stdout
    assert re.search(r"fold\s+base fold\s+labeled\s+seed\s+n train\s+n val", out), out
    for fold, base, labeled in ((3, 0, 2), (4, 0, 5), (5, 2, 2), (6, 2, 5)):
        assert re.search(rf"^\s*{fold}\s+{base}\s+{labeled}\s+3\s+{labeled}\s+4\s+new$", out, re.M), out
    assert "nnUNetv2_train 321 3d_fullres 3" in out and "3 existing folds unchanged, 4 added" in out


def _entry(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    return run_entry(splits_entry, "nnUNetv2_ssl_splits", monkeypatch, capsys, *args)


@pytest.mark.parametrize("args, message", [
    (["--labeled", "2", "40"], "label budget 40 is larger than the 9 training cases of base fold 0"),
    (["--labeled", "2", "--base-folds", "0", "7"], "base fold 7 does not exist: splits_final.json has 5 folds"),
])
def test_bad_budgets_and_base_folds_fail_cleanly_and_change_nothing(nnunet_env, monkeypatch, capsys, args, message):
    folder = _preprocessed(nnunet_env, _standard_splits(CASES[:12]))
    with open(os.path.join(folder, "splits_final.json"), "rb") as f:
        before = f.read()
    code, output = _entry(monkeypatch, capsys, "-d", "321", *args)
    assert code == 2 and "Traceback" not in output and message in output and "Fix:" in output, output
    with open(os.path.join(folder, "splits_final.json"), "rb") as f:
        assert f.read() == before
    assert not os.path.exists(os.path.join(folder, "label_budget_folds.json"))


def test_missing_splits_file_is_created_as_nnunet_would_then_extended(nnunet_env, monkeypatch, capsys):
    from nnunet_ssl.integration.splits import add_label_budget_folds as splits
    cases = CASES[:12]
    folder = _preprocessed(nnunet_env, None, cases)
    rows = splits("321", [2, 4], base_folds=[1], seed=0)
    out = capsys.readouterr().out
    written = read_json(folder, "splits_final.json")
    assert written[:5] == _standard_splits(cases) and len(written) == 7  # nnU-Net's seed-12345 5-fold split first
    assert "default 5-fold split of 12 cases" in out and "nnUNetPlans_3d_fullres" in out
    assert [(r["fold"], r["base_fold"], r["labeled"]) for r in rows] == [(5, 1, 2), (6, 1, 4)]
    # same arguments again: nothing added; another seed: appended, mapping merged
    assert splits("321", [2, 4], base_folds=[1], seed=0) == rows
    assert "nothing added" in capsys.readouterr().out and read_json(folder, "splits_final.json") == written
    splits("321", [2], base_folds=[1], seed=1)
    assert read_json(folder, "splits_final.json")[:7] == written
    mapping = read_json(folder, "label_budget_folds.json")["folds"]
    assert [(r["fold"], r["seed"]) for r in mapping] == [(5, 0), (6, 0), (7, 1)]
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]
    # a budget fold is not a base fold
    code, output = _entry(monkeypatch, capsys, "-d", "321", "--labeled", "1", "--base-folds", "6")
    assert code == 2 and "fold 6 is itself a label-budget fold" in output


def test_a_dataset_that_is_not_preprocessed_names_the_command(nnunet_env, monkeypatch, capsys):
    os.makedirs(os.path.join(nnunet_env["nnUNet_raw"], NAME))
    code, output = _entry(monkeypatch, capsys, "-d", "321", "--labeled", "2")
    assert code == 2 and "Traceback" not in output, output
    assert "Dataset321_Synthetic is not planned and preprocessed" in output
    assert "nnUNetv2_plan_and_preprocess -d 321" in output


def test_a_mapping_of_another_splits_file_is_refused(nnunet_env, monkeypatch, capsys):
    folder = _preprocessed(nnunet_env, _standard_splits(CASES[:12]))
    with open(os.path.join(folder, "label_budget_folds.json"), "w") as f:
        json.dump({"folds": [{"fold": 5, "base_fold": 0, "labeled": 2, "seed": 0, "train": 2, "n_val": 3}]}, f)
    code, output = _entry(monkeypatch, capsys, "-d", "321", "--labeled", "2")
    assert code == 2 and "Traceback" not in output and "belongs to an earlier splits file" in output, output


def test_before_preprocessing_writes_cases_the_raw_training_cases_are_split(nnunet_env, capsys):
    from nnunet_ssl.integration.splits import add_label_budget_folds as splits
    folder = _preprocessed(nnunet_env)  # planned only: dataset.json, no case files
    images = os.path.join(nnunet_env["nnUNet_raw"], NAME, "imagesTr")
    os.makedirs(images)
    for case in CASES[:6]:
        open(os.path.join(images, case + "_0000.nii.gz"), "w").close()
    splits("321", [1], base_folds=[0])
    assert read_json(folder, "splits_final.json")[:5] == _standard_splits(CASES[:6])
    assert "raw training cases" in capsys.readouterr().out


def test_the_demo_fold_is_written_once_and_another_fold_0_is_refused(tmp_path):
    from nnunet_ssl.errors import SSLUserError
    from nnunet_ssl.integration.splits import write_single_fold
    os.makedirs(tmp_path / NAME)
    split = {"train": CASES[:5], "val": CASES[5:35]}
    assert write_single_fold(str(tmp_path), NAME, split) == split
    path = tmp_path / NAME / "splits_final.json"
    assert json.loads(path.read_text()) == [split]
    before = path.read_bytes()
    assert write_single_fold(str(tmp_path), NAME, split) == split  # the same fold again: nothing to do
    with pytest.raises(SSLUserError, match="exists with another fold 0"):
        write_single_fold(str(tmp_path), NAME, {"train": CASES[:4], "val": CASES[5:35]})
    assert path.read_bytes() == before
