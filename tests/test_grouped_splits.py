"""Grouped label-budget folds (issue 14, item 6): several volumes per patient; no fold splits a
patient, budgets count patients, nnU-Net's per-case folds are never changed."""
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import read_json, run_entry, script, write_minimal_preprocessed

from nnunet_ssl.cli.splits import splits_entry
from nnunet_ssl.data.folds import (check_groups, grouped_budget_subset, groups_from_pattern, label_budget_folds,
                                   split_patients)

NAME = "Dataset322_Frames"
PATIENTS = [f"patient{p:03d}" for p in range(12)]
CASES = [f"{p}_frame{f:02d}" for p in PATIENTS for f in (1, 12)]  # ED and ES frame of each patient
GROUPS = {c: c.split("_")[0] for c in CASES}
PATTERN = r"^(patient\d+)_"


def _nnunet_folds(ids):
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    return [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]}
            for s in generate_crossval_split(sorted(ids), seed=12345, n_splits=5)]


def _preprocessed(env: dict, splits: list[dict] | None = None, plans: bool = False) -> str:
    """The splits command's minimal folder, optionally with plans whose 3d_fullres reads it."""
    folder = write_minimal_preprocessed(env, NAME, CASES, "cineMRI", {"background": 0, "LV": 1}, splits)
    if plans:
        with open(os.path.join(os.path.dirname(__file__), "data", "nnUNetPlans_256x216.json")) as f:
            content = json.load(f)
        content["dataset_name"] = NAME
        with open(os.path.join(folder, "nnUNetPlans.json"), "w") as f:
            json.dump(content, f)
    return folder


def _read_bytes(path: str) -> bytes | None:
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------- pure functions

def test_grouped_budgets_count_patients_take_all_their_cases_and_nest():
    train = [c for c in CASES if GROUPS[c] not in PATIENTS[:3]]
    subsets = [grouped_budget_subset(train, 0, m, seed=0, groups=GROUPS) for m in (2, 4, 6)]
    for m, subset in zip((2, 4, 6), subsets):
        patients = {GROUPS[c] for c in subset}
        assert len(patients) == m and len(subset) == 2 * m  # both frames of each drawn patient
        assert subset == [c for c in train if c in subset]  # listed in the base fold's order
    assert set(subsets[0]) < set(subsets[1]) < set(subsets[2])
    assert grouped_budget_subset(train, 0, 4, seed=1, groups=GROUPS) != subsets[1]


def test_label_budget_folds_with_groups_refuse_a_base_fold_that_splits_a_patient():
    per_case = _nnunet_folds(CASES)
    assert split_patients(per_case[0], GROUPS)  # nnU-Net's per-case folds do split patients here
    with pytest.raises(ValueError, match="base fold 0 has .* patient.*in training and validation"):
        label_budget_folds(per_case, [0], [2], 0, groups=GROUPS)


def test_groups_from_pattern_and_check_groups():
    assert groups_from_pattern(CASES, PATTERN) == GROUPS
    assert check_groups({**GROUPS, CASES[0]: 7}, CASES, "g.json")[CASES[0]] == "7"  # integer ids are fine
    with pytest.raises(ValueError, match=r"has no group \( ... \)"):
        groups_from_pattern(CASES, r"^patient\d+_")
    with pytest.raises(ValueError, match="12 of 24 case.*do not match"):
        groups_from_pattern(CASES, r"^(patient\d+)_frame01")  # no frame12 matches
    with pytest.raises(ValueError, match="not a regular expression"):
        groups_from_pattern(CASES, "(patient")


# ---------------------------------------------------------------- the command, on real split files

def _entry(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    return run_entry(splits_entry, "nnUNetv2_ssl_splits", monkeypatch, capsys, *args)


def test_grouped_command_appends_grouped_base_folds_and_patient_budgets(nnunet_env, monkeypatch, capsys):
    folder = _preprocessed(nnunet_env)  # no splits file yet: the command makes nnU-Net's first
    result = subprocess.run([script("nnUNetv2_ssl_splits"), "-d", "322", "--labeled", "4", "2",
                             "--base-folds", "0", "1", "--group-pattern", PATTERN],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    splits = read_json(folder, "splits_final.json")
    per_case = _nnunet_folds(CASES)
    assert splits[:5] == per_case  # nnU-Net's own per-case folds, untouched
    assert "splits patient" in result.stdout and "0 -> fold 5, 1 -> fold 6" in result.stdout, result.stdout

    # folds 5..9: nnU-Net's KFold(seed 12345) over the 12 patients, each patient's frames on one side
    by_patient = _nnunet_folds(PATIENTS)
    for k in range(5):
        grouped = splits[5 + k]
        assert split_patients(grouped, GROUPS) == []
        assert sorted({GROUPS[c] for c in grouped["val"]}) == sorted(by_patient[k]["val"])
        assert sorted(grouped["train"] + grouped["val"]) == sorted(CASES)
    assert sorted(c for k in range(5) for c in splits[5 + k]["val"]) == sorted(CASES)  # a partition

    mapping = read_json(folder, "label_budget_folds.json")
    assert mapping["groups"] == GROUPS and mapping["grouped_base_folds"] == [5, 6, 7, 8, 9]
    rows = mapping["folds"]
    assert [(r["fold"], r["base_fold"], r["labeled"], r["train"], r["grouped"]) for r in rows] == [
        (10, 5, 2, 4, True), (11, 5, 4, 8, True), (12, 6, 2, 4, True), (13, 6, 4, 8, True)]
    for r in rows:
        fold, base = splits[r["fold"]], splits[r["base_fold"]]
        assert len({GROUPS[c] for c in fold["train"]}) == r["labeled"]
        assert fold["val"] == base["val"] and set(fold["train"]) <= set(base["train"])
        assert split_patients(fold, GROUPS) == []
    assert set(splits[10]["train"]) < set(splits[11]["train"])
    assert re.search(r"fold\s+base fold\s+patients", result.stdout)

    # the same request again adds nothing and rewrites nothing
    before = (_read_bytes(os.path.join(folder, "splits_final.json")),
              _read_bytes(os.path.join(folder, "label_budget_folds.json")))
    code, output = _entry(monkeypatch, capsys, "-d", "322", "--labeled", "2", "4", "--base-folds", "0", "1",
                          "--group-pattern", PATTERN)
    assert code == 0 and "nothing added" in output, output
    assert (_read_bytes(os.path.join(folder, "splits_final.json")),
            _read_bytes(os.path.join(folder, "label_budget_folds.json"))) == before


def test_grouped_base_folds_a_user_wrote_are_used_as_they_are(nnunet_env, tmp_path):
    from nnunet_ssl.integration.splits import add_label_budget_folds
    own = [{"train": [c for c in CASES if GROUPS[c] not in PATIENTS[4 * k:4 * k + 4]],
            "val": [c for c in CASES if GROUPS[c] in PATIENTS[4 * k:4 * k + 4]]} for k in range(3)]
    folder = _preprocessed(nnunet_env, own)
    groups_file = tmp_path / "groups.json"
    groups_file.write_text(json.dumps(GROUPS))
    rows = add_label_budget_folds("322", [3], base_folds=[0, 2], seed=0, groups_file=str(groups_file))
    splits = read_json(folder, "splits_final.json")
    assert splits[:3] == own and len(splits) == 5  # only the two budget folds were appended
    assert [(r["fold"], r["base_fold"], r["labeled"], r["train"]) for r in rows] == [(3, 0, 3, 6), (4, 2, 3, 6)]
    assert "grouped_base_folds" not in read_json(folder, "label_budget_folds.json")


@pytest.mark.parametrize("content, args, message", [
    ("{not json", [], "cannot read groups file"),
    (json.dumps(list(GROUPS.items())), [], "must map each case id to its patient id, found a JSON list"),
    (json.dumps({**GROUPS, "patient099_frame01": "patient099"}), [],
     "names 1 case(s) that are not training cases of this dataset (e.g. ['patient099_frame01'])"),
    (json.dumps({c: p for c, p in GROUPS.items() if c != CASES[3]}), [],
     "1 training case(s) have no patient in"),
    (json.dumps({**GROUPS, CASES[0]: ["patient000"]}), [], "no usable patient id"),
    (json.dumps(GROUPS), ["--labeled", "10"], "label budget 10 is larger than the 9 training patients"),
    (None, ["--group-pattern", r"^(patient\d+)_frame01"], "do not match --group-pattern"),
    (None, ["--group-pattern", "(patient"], "is not a regular expression"),
    (None, ["--groups", "/nonexistent/groups.json"], "groups file /nonexistent/groups.json does not exist"),
])
def test_bad_groups_fail_cleanly_and_change_nothing(nnunet_env, monkeypatch, capsys, tmp_path, content, args,
                                                    message):
    folder = _preprocessed(nnunet_env, _nnunet_folds(CASES))
    before = _read_bytes(os.path.join(folder, "splits_final.json"))
    group_args = []
    if content is not None:
        (tmp_path / "groups.json").write_text(content)
        group_args = ["--groups", str(tmp_path / "groups.json")]
    labeled = [] if "--labeled" in args else ["--labeled", "2"]
    code, output = _entry(monkeypatch, capsys, "-d", "322", *labeled, *group_args, *args)
    assert code == 2 and "Traceback" not in output and message in output, output
    assert "Fix:" in output
    assert _read_bytes(os.path.join(folder, "splits_final.json")) == before
    assert not os.path.exists(os.path.join(folder, "label_budget_folds.json"))


def test_both_groupings_or_other_groups_than_before_are_refused(nnunet_env, monkeypatch, capsys, tmp_path):
    folder = _preprocessed(nnunet_env, _nnunet_folds(CASES))
    (tmp_path / "groups.json").write_text(json.dumps(GROUPS))
    code, output = _entry(monkeypatch, capsys, "-d", "322", "--labeled", "2", "--groups",
                          str(tmp_path / "groups.json"), "--group-pattern", PATTERN)
    assert code == 2 and "not allowed with argument" in output, output
    code, output = _entry(monkeypatch, capsys, "-d", "322", "--labeled", "2", "--group-pattern", PATTERN)
    assert code == 0, output
    after_first = _read_bytes(os.path.join(folder, "splits_final.json"))
    other = {**GROUPS, CASES[1]: "patient099"}  # one ES frame called another patient
    (tmp_path / "other.json").write_text(json.dumps(other))
    code, output = _entry(monkeypatch, capsys, "-d", "322", "--labeled", "2", "--groups", str(tmp_path / "other.json"))
    assert code == 2 and "differ from the ones" in output and "Traceback" not in output, output
    assert _read_bytes(os.path.join(folder, "splits_final.json")) == after_first


def test_benchmark_passes_the_groups_through(nnunet_env, monkeypatch, capsys):
    """--report-only writes no folds (issue 37): before the grouped folds exist it refuses and leaves the files as
    they were; once nnUNetv2_ssl_splits made them, the benchmark finds the same folds (the groups reached it) and
    stops at the missing trainings."""
    from nnunet_ssl.cli.benchmark import benchmark_entry
    folder = _preprocessed(nnunet_env, plans=True)
    args = ["-d", "322", "--labeled", "3", "--base-folds", "0", "--group-pattern", PATTERN]
    before = sorted(os.listdir(folder))
    for expected in ("does not hold these label-budget folds yet", "have no finished training yet"):
        monkeypatch.setattr(sys, "argv", ["nnUNetv2_ssl_benchmark", *args, "--methods", "scratch", "--length", "tiny",
                                          "--report-only", "-o", str(nnunet_env["nnUNet_results"])])
        with pytest.raises(SystemExit) as e:
            benchmark_entry()
        output = capsys.readouterr()
        assert e.value.code == 2 and expected in output.err, output
        if expected.startswith("does not"):
            assert sorted(os.listdir(folder)) == before and os.listdir(nnunet_env["nnUNet_results"]) == []
            code, output = _entry(monkeypatch, capsys, *args)
            assert code == 0, output
            made = _read_bytes(os.path.join(folder, "splits_final.json"))
    assert _read_bytes(os.path.join(folder, "splits_final.json")) == made
    splits = read_json(folder, "splits_final.json")
    budget = splits[-1]
    assert len(splits) == 11 and len({GROUPS[c] for c in budget["train"]}) == 3
    assert split_patients(budget, GROUPS) == [] and budget["val"] == splits[5]["val"]


def test_benchmark_without_nnunet_results_says_so_before_writing_folds(nnunet_env, monkeypatch, capsys):
    from nnunet_ssl.cli.benchmark import benchmark_entry
    folder = _preprocessed(nnunet_env, plans=True)
    monkeypatch.delenv("nnUNet_results")
    monkeypatch.setattr(sys, "argv", ["nnUNetv2_ssl_benchmark", "-d", "322", "--labeled", "3", "--methods", "scratch",
                                      "--length", "tiny", "--group-pattern", PATTERN, "-device", "cpu"])
    with pytest.raises(SystemExit) as e:
        benchmark_entry()
    output = capsys.readouterr()
    assert e.value.code == 2 and "nnUNet_results is not set" in output.err and "Traceback" not in output.err
    assert not os.path.exists(os.path.join(folder, "splits_final.json"))
