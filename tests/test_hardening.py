"""Issue 14: every bad input stops with a message and a fix before anything is written; one writer
per pretraining folder; resume and final writes; architecture compatibility on load.

The CLI cases reuse the session's planned and preprocessed synthetic dataset (conftest.pretrained)
with a results folder of their own, and fail before training starts, so each costs one start-up.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import DATASET_ID, PLANS, fails_cleanly, script

from nnunet_ssl.errors import SSLUserError

PRETRAIN = [script("nnUNetv2_ssl_pretrain"), "-d", str(DATASET_ID), "-p", PLANS, "-device", "cpu"]
FIXTURE_SCHEDULE = ["--epochs", "2", "--iterations-per-epoch", "3", "--batch-size", "4"]  # as conftest.pretrained


@pytest.fixture
def own_results(pretrained, tmp_path):
    """The session's dataset with an empty results folder of this test's own (nnUNet_results)."""
    results = tmp_path / "results"
    results.mkdir()
    env = {**os.environ, **pretrained["env"], "nnUNet_results": str(results), "nnUNet_n_proc_DA": "0",
           "OMP_NUM_THREADS": "1"}
    return env, results


def run_ok(args: list[str], env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def written_results(results) -> list[str]:
    """Every file under a results folder (a refused command must leave none)."""
    return sorted(os.path.relpath(os.path.join(d, f), results) for d, _, files in os.walk(results) for f in files)


def tree(folder) -> dict:
    """Every file under ``folder`` with its size and modification time: what a refusal must leave as it was."""
    return {os.path.relpath(os.path.join(d, f), folder): (os.path.getsize(os.path.join(d, f)),
                                                          os.path.getmtime(os.path.join(d, f)))
            for d, _, files in os.walk(folder) for f in files}


def _recipe(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.json"
    path.write_text(text)
    return str(path)


def _unlabeled(tmp_path, pretrained, kind: str) -> str:
    folder = tmp_path / f"unlabeled_{kind}"
    folder.mkdir()
    good = os.path.join(pretrained["env"]["nnUNet_raw"], pretrained["name"], "imagesTr", "case_000_0000.nii.gz")
    if kind == "truncated":  # the drill: head -c 30000 good_0000.nii.gz > t_0000.nii.gz
        with open(good, "rb") as f:
            data = f.read()
        (folder / "t_0000.nii.gz").write_bytes(data[:len(data) // 2])
    elif kind == "20 mm":  # issue 37: resampled to 1 mm it would hold 7000 times the dataset's largest case
        volume = sitk.ReadImage(good)
        volume.SetSpacing((20.0, 20.0, 20.0))
        sitk.WriteImage(volume, str(folder / "coarse_0000.nii.gz"))
    elif kind == "a file":
        folder.rmdir()
        folder.write_text("")
    elif kind == "empty":
        pass
    elif kind == "good":
        shutil.copy(good, folder / "g_0000.nii.gz")
    else:  # three volumes in one file
        volume = sitk.ReadImage(good)
        sitk.WriteImage(sitk.JoinSeries([volume] * 3), str(folder / "f_0000.nii.gz"))
    return str(folder)


# (case id, extra pretrain arguments or a builder of them, texts the output must contain)
BAD_PRETRAIN_INPUTS = [
    ("epochs 0", ["--epochs", "0"], ["num_epochs = 0: must be >= 1", "--epochs"]),
    ("epochs -1", ["--epochs", "-1"], ["num_epochs = -1: must be >= 1"]),
    ("batch size 1", ["--batch-size", "1"], ["batch_size = 1: must be >= 2", "no negatives", "--batch-size 16"]),
    ("batch size 0", ["--batch-size", "0"], ["batch_size = 0: must be >= 2"]),
    ("iterations 0", ["--iterations-per-epoch", "0"], ["iterations_per_epoch = 0: must be >= 1"]),
    ("patch 0 0 0", ["--patch-size", "0", "0", "0"], ["patch_size = [0, 0, 0]: must be >= 1", "--patch-size"]),
    ("patch negative", ["--patch-size", "-16", "48", "32"], ["must be >= 1 for every element"]),
    ("patch huge", ["--patch-size", "16", "9992", "9992"], ["larger than the data allow: at most", "--patch-size within"]),
    ("lr -1", ["--lr", "-1"], ["initial_lr = -1.0: must be > 0", "--lr"]),
    ("theta -1", ["--set", "theta=-1"], ["theta = -1: must be > 0", "--set theta=0.1"]),
    ("theta abc", ["--set", "theta=abc"], ["theta = 'abc': must be a number", "--set theta=0.1"]),
    ("temperature 0", ["--set", "temperature=0"], ["temperature = 0: must be > 0"]),
    ("mlsscl temperature 0", ["-m", "mlsscl", "--set", "temperature=0"], ["mlsscl option temperature"]),
    ("recipe malformed", lambda t, p: ["--recipe", _recipe(t, '{"schedule": {"num_epochs": 2,}}')],
     ["is not valid JSON", "line 1", "a recipe looks like"]),
    ("recipe list", lambda t, p: ["--recipe", _recipe(t, '[{"schedule": {}}]')], ["is a JSON list, not an object"]),
    ("recipe bad key", lambda t, p: ["--recipe", _recipe(t, '{"schedul": {}}')], ["unknown key(s) ['schedul']"]),
    ("plans label_budget_folds", ["-p", "label_budget_folds"],
     ["no plans 'label_budget_folds'", "is not a plans file", "nnUNetPlans_cpu"]),
    ("unlabeled truncated", lambda t, p: ["--unlabeled", _unlabeled(t, p, "truncated")],
     ["t_0000.nii.gz is truncated", "copy that file again"]),
    ("unlabeled 4D", lambda t, p: ["--unlabeled", _unlabeled(t, p, "4d")],
     ["f_0000.nii.gz holds several volumes (a 4D image)", "one file per channel"]),
    # issue 37
    ("patch one bottleneck voxel", ["--patch-size", "8", "8", "4"],
     ["reaches the network's bottleneck as 1x1x1 voxel(s)", "InstanceNorm needs at least 2", "16 8 4"]),
    ("unlabeled at 20 mm", lambda t, p: ["--unlabeled", _unlabeled(t, p, "20 mm")],
     ["coarse_0000.nii.gz (shape [28, 32, 28], spacing [20.0, 20.0, 20.0]) would be resampled to [560, 640, 560]",
      "more than 8 times is refused", "nothing was preprocessed", "check its header's spacing"]),
    ("unlabeled a file", lambda t, p: ["--unlabeled", _unlabeled(t, p, "a file")], ["is a file, not a folder"]),
    ("unlabeled empty folder", lambda t, p: ["--unlabeled", _unlabeled(t, p, "empty")], ["it is empty"]),
    ("unlabeled, patch off the strides", lambda t, p: ["--unlabeled", _unlabeled(t, p, "good"), "--patch-size", "12",
                                                       "8", "4"], ["does not fit the network"]),  # made the case first
    ("recipe a folder", lambda t, p: ["--recipe", str(t)], ["is a folder, not a recipe file"]),
    ("recipe file missing", lambda t, p: ["--recipe", str(t / "mine.json")], ["mine.json does not exist"]),
    # issue 36: refused when the options are built, before the data is opened and the unlabeled case is made
    # (MoCo's rules ran in its constructor, conv_weight_scale in the pretraining loop's)
    ("moco momentum 2, with unlabeled", lambda t, p: ["-m", "moco", "--set", "momentum=2", "--unlabeled",
                                                      _unlabeled(t, p, "good")],
     ["moco option momentum = 2: must be >= 0 and <= 1", "--set momentum=0.999"]),
    ("recipe conv_weight_scale", lambda t, p: ["--recipe", _recipe(t, '{"schedule": {"conv_weight_scale": "big"}}')],
     ["schedule option conv_weight_scale = 'big': must be one of 'he', 'free'", "--conv-weight-scale he"]),
    ("conv-weight-scale HE", ["--conv-weight-scale", "HE"], ["conv_weight_scale = 'HE': must be one of 'he', 'free'"]),
]


def fails_cleanly_in_process(entry, argv: list[str], env: dict, capsys, monkeypatch, *expected: str) -> str:
    """``fails_cleanly`` for a console script's entry function, called in this process (argparse,
    run_cli and all; no interpreter start-up per case): exit code != 0, the texts, no exception."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        entry()
    output = "".join(capsys.readouterr())
    assert stop.value.code not in (0, None), output[-2000:]
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output[-3000:]}"
    return output


@pytest.mark.parametrize("args, expected", [c[1:] for c in BAD_PRETRAIN_INPUTS], ids=[c[0] for c in BAD_PRETRAIN_INPUTS])
def test_bad_pretrain_input_fails_cleanly_and_writes_nothing(pretrained, own_results, tmp_path, capsys, monkeypatch,
                                                             args, expected):
    from nnunet_ssl.cli.pretrain import pretrain_entry
    env, results = own_results
    args = args(tmp_path, pretrained) if callable(args) else args
    prepared = os.path.join(pretrained["env"]["nnUNet_preprocessed"], pretrained["name"], "label_budget_folds.json")
    preprocessed_before = tree(os.path.dirname(prepared))
    made = "label_budget_folds" in args and not os.path.exists(prepared)
    if made:  # what nnUNetv2_ssl_splits writes next to the plans
        with open(prepared, "w") as f:
            json.dump({"folds": []}, f)
    try:
        fails_cleanly_in_process(pretrain_entry, PRETRAIN + list(args), env, capsys, monkeypatch, *expected, "Fix:")
    finally:
        if made:
            os.remove(prepared)
    assert os.listdir(results) == []  # not even an empty dataset folder
    assert tree(os.path.dirname(prepared)) == preprocessed_before  # nor unlabeled cases preprocessed


def test_bad_input_through_the_installed_command(own_results):
    """The same path as a separate process: exit code 2, no traceback, nothing written."""
    env, results = own_results
    fails_cleanly(PRETRAIN + ["--epochs", "0"], "num_epochs = 0: must be >= 1", "Fix: e.g. --epochs", env=env)
    assert os.listdir(results) == []


@pytest.mark.parametrize("kind", ["read-only", "not a folder"])
def test_unwritable_results_folder(pretrained, own_results, tmp_path, kind):
    env, results = own_results
    if kind == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        results.chmod(0o555)
    else:
        env["nnUNet_results"] = str(tmp_path / "a_file")
        (tmp_path / "a_file").write_text("")
    try:
        fails_cleanly(PRETRAIN + FIXTURE_SCHEDULE, "cannot write into", "nnUNet_results", env=env)
    finally:
        results.chmod(0o755)


@pytest.mark.parametrize("command", [["nnUNetv2_ssl_benchmark", "-d", str(DATASET_ID), "--labeled", "2", "-p", PLANS,
                                      "-device", "cpu"],
                                     ["nnUNetv2_ssl_export", "-d", str(DATASET_ID), "-o", "/tmp/nowhere"]])
def test_results_unset(pretrained, command):
    env = {k: v for k, v in {**os.environ, **pretrained["env"]}.items() if k != "nnUNet_results"}
    fails_cleanly([script(command[0])] + command[1:], "nnUNet_results is not set", "export nnUNet_results=", env=env)


# --- issue 37: --c on a finished run, missing preprocessed cases ----------------------------------

# (case, what --c asks differently from the fixture's finished run, texts the refusal must contain)
FINISHED_RUN_CONTINUED_WITH = [
    ("epochs", ["--epochs", "3"], ["other hyperparameters", "schedule.num_epochs 2 there, 3 now"]),
    ("lr", ["--lr", "0.05"], ["schedule.initial_lr 0.1 there, 0.05 now"]),
    ("set theta", ["--set", "theta=0.2"], ["method.theta 0.1 there, 0.2 now"]),
    ("unlabeled", lambda t, p: ["--unlabeled", _unlabeled(t, p, "4d")], ["other cases", "1 added"]),
]


@pytest.mark.parametrize("args, expected", [c[1:] for c in FINISHED_RUN_CONTINUED_WITH],
                         ids=[c[0] for c in FINISHED_RUN_CONTINUED_WITH])
def test_continuing_a_finished_run_with_other_settings_is_refused(pretrained, own_results, tmp_path, capsys,
                                                                  monkeypatch, args, expected):
    """Before: exit 0, "already finished", the old result kept as if it had the new settings."""
    from nnunet_ssl.cli.pretrain import pretrain_entry
    env, results = own_results
    folder = _copy_of_fixture_pretraining(pretrained, results)
    before = tree(folder)
    args = args(tmp_path, pretrained) if callable(args) else args
    schedule = FIXTURE_SCHEDULE[2:] if args[0] == "--epochs" else FIXTURE_SCHEDULE  # all else as the run had it
    fails_cleanly_in_process(pretrain_entry, PRETRAIN + schedule + args + ["--c"], env, capsys, monkeypatch,
                             *expected, "Fix:")
    assert tree(folder) == before


def test_missing_preprocessed_cases_are_refused_or_allowed_by_name(pretrained, tmp_path):
    """Before: 3 of 8 images deleted, pretraining exited 0 having trained on 5 cases."""
    preprocessed = tmp_path / "preprocessed"
    shutil.copytree(os.path.join(pretrained["env"]["nnUNet_preprocessed"], pretrained["name"]),
                    preprocessed / pretrained["name"], ignore=shutil.ignore_patterns("nnunet_ssl_unlabeled"))
    data = preprocessed / pretrained["name"] / "nnUNetPlans_3d_fullres"
    for case in ("case_001", "case_004"):
        (data / f"{case}.b2nd").unlink()  # what a user's clean-up or an interrupted preprocessing leaves
    (data / "case_006.pkl").unlink()  # listed by nnU-Net's dataset class, unreadable by it
    results = tmp_path / "results"
    results.mkdir()
    env = {**os.environ, **pretrained["env"], "nnUNet_preprocessed": str(preprocessed),
           "nnUNet_results": str(results), "nnUNet_n_proc_DA": "0", "OMP_NUM_THREADS": "1"}
    fails_cleanly(PRETRAIN + FIXTURE_SCHEDULE, "3 of Dataset987_Synthetic's 8 cases have no complete preprocessed",
                  "['case_001', 'case_004', 'case_006']", f"nnUNetv2_preprocess -d {DATASET_ID} -c 3d_fullres "
                  f"-plans_name {PLANS}", "--allow-missing-cases to use only the 5 complete ones", env=env)
    assert os.listdir(results) == []
    allowed = run_ok(PRETRAIN + ["--epochs", "1", "--iterations-per-epoch", "1", "--batch-size", "4",
                                 "--allow-missing-cases"], env)
    assert "WARNING: 3 of" in allowed.stdout and ": 5 cases, device cpu" in allowed.stdout


def test_incomplete_cases():
    from nnunet_ssl.integration.dataset import CASE_FILES, incomplete_cases
    blosc2 = CASE_FILES["nnUNetDatasetBlosc2"]
    files = ["a.b2nd", "a_seg.b2nd", "a.pkl", "b_seg.b2nd", "b.pkl", "c.b2nd", "c_seg.b2nd", "x.b2nd"]
    assert incomplete_cases(files, ["a", "b", "c", "d"], blosc2) == ["b", "c", "d", "x"]
    assert incomplete_cases(["a.npz", "a.pkl", "b.npz"], ["a"], CASE_FILES["nnUNetDatasetNumpy"]) == ["b"]


# --- issue 37: every command, every path argument, every write before a refusal -------------------

def _earlier_csv(tmp_path, pretrained, kind: str) -> str:
    """A benchmark.csv of scratch at M = 2 on base fold 0 (the fold this matrix would add), damaged as ``kind``."""
    from nnunet_ssl.integration.splits import plan_label_budget_folds
    plan = plan_label_budget_folds(pretrained["name"], [2], [0], BENCHMARK_SEED)
    fold = plan.rows[0]["fold"]
    cases = plan.validation_cases(fold)
    header = "method,labeled,iterations,base_fold,fold,trainer,case,dice_foreground\n"
    rows = [f"scratch,2,4,0,{fold},SSLScratchTrainer_tiny,{c},0.8\n" for c in cases]
    path = tmp_path / f"{kind.replace(' ', '_')}.csv"
    if kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 20)
    elif kind == "folder":
        path.mkdir()
    else:
        text = {"short row": header + rows[0].replace(",0.8", ""),
                "fold not a number": header + rows[0].replace(f",{fold},", ",abc,"),
                "dice not a number": header + rows[0].replace("0.8", "good"),
                "nan dice": header + rows[0] + rows[1].replace("0.8", "nan"),
                "incomplete fold": header + rows[0]}[kind]
        path.write_text(text)
    return str(path)


def _written(path, text: str) -> str:
    path.write_text(text)
    return str(path)


BENCHMARK_SEED = 37  # a draw no other test makes: its folds are never in the shared splits_final.json
BENCHMARK = ["-d", str(DATASET_ID), "-p", PLANS, "--methods", "scratch", "--labeled", "2", "--base-folds", "0",
             "--length", "tiny", "--seed", str(BENCHMARK_SEED)]
# (case, arguments or a builder of them, texts the refusal must contain); before: the folds were appended to
# splits_final.json first, then some of these ended in a traceback or a report that passed a damaged fold
BAD_BENCHMARK_INPUTS = [
    ("device cuda", ["-device", "cuda"], ["-device cuda was requested but no CUDA GPU is available"]),
    ("partial without report-only", ["-device", "cpu", "--partial"],
     ["--partial only applies to --report-only", "nothing was written"]),  # an argparse rule the library lacked
    ("report-only before the folds exist", ["-device", "cpu", "--report-only"],
     ["does not hold these label-budget folds yet", "nothing was written"]),
    ("-o a file", lambda t, p: ["-device", "cpu", "-o", str((t / "a_file").write_text("") or t / "a_file")],
     ["a_file is a file, not a folder"]),
    ("pretrain recipe of another method", ["-device", "cpu", "--methods", "scratch", "mae", "--pretrain-recipe",
                                           "pcl_3d"], ["--pretrain-recipe pcl_3d is a pcl recipe", "['mae']"]),
    ("pretrain recipe with a bad option", lambda t, p: [
        "-device", "cpu", "--methods", "scratch", "moco", "--pretrain-recipe",
        _written(t / "r.json", '{"method": "moco", "method_config": {"momentum": 2}}')],
     ["moco option momentum = 2: must be >= 0 and <= 1"]),  # before: refused by the pretraining, after the folds
    ("groups a folder", lambda t, p: ["-device", "cpu", "--groups", str(t)], ["is a folder, not a file"]),
    *[(f"earlier {kind}", lambda t, p, kind=kind: ["-device", "cpu", "--earlier", _earlier_csv(t, p, kind)], expected)
      for kind, expected in (
          ("binary", ["is not a text CSV file"]), ("folder", ["is a folder, not a benchmark.csv"]),
          ("short row", ["line 2 has 7 fields where the header has 8"]),
          ("fold not a number", ["line 2: fold = 'abc' is not a whole number"]),
          ("dice not a number", ["line 2: dice_foreground = 'good' is not a number"]),
          ("nan dice", ["has dice_foreground NaN, but its reference has foreground"]),
          ("incomplete fold", ["has 1 of the fold's 2 validation cases (missing"]))],
]


@pytest.mark.parametrize("args, expected", [c[1:] for c in BAD_BENCHMARK_INPUTS],
                         ids=[c[0] for c in BAD_BENCHMARK_INPUTS])
def test_bad_benchmark_input_fails_before_writing(pretrained, own_results, tmp_path, capsys, monkeypatch, args,
                                                  expected):
    from nnunet_ssl.cli.benchmark import benchmark_entry
    import torch
    env, results = own_results
    args = args(tmp_path, pretrained) if callable(args) else args
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is there")
    prepared = os.path.join(pretrained["env"]["nnUNet_preprocessed"], pretrained["name"])
    before = tree(prepared)
    fails_cleanly_in_process(benchmark_entry, ["nnUNetv2_ssl_benchmark"] + BENCHMARK + args, env, capsys,
                             monkeypatch, *expected, "Fix:")
    assert tree(prepared) == before and os.listdir(results) == []


def _other_entries():
    from nnunet_ssl.cli.demo import demo_entry
    from nnunet_ssl.cli.health import health_entry
    from nnunet_ssl.cli.plan_cpu import plan_cpu_entry
    from nnunet_ssl.cli.splits import splits_entry
    from nnunet_ssl.cli.import_dataset import import_entry
    from nnunet_ssl.cli.render import render_entry
    from nnunet_ssl.cli.throughput import throughput_entry
    return {"nnUNetv2_ssl_plan_cpu": plan_cpu_entry, "nnUNetv2_ssl_health": health_entry,
            "nnUNetv2_ssl_throughput": throughput_entry, "nnUNetv2_ssl_splits": splits_entry,
            "nnUNetv2_ssl_demo": demo_entry, "nnUNetv2_ssl_render": render_entry,
            "nnUNetv2_ssl_import": import_entry}


def _every_path(folder) -> list[str]:
    """Every folder and file under ``folder``: a refusal makes none (the demo once made its nnUNet_* folders first)."""
    return sorted(os.path.join(d, name) for d, dirs, files in os.walk(folder) for name in dirs + files)


def _taken_demo_id(tmp_path):
    """A workdir whose nnUNet_raw holds another dataset under the demo's id (the demo made its other folders first)."""
    from nnunet_ssl.benchmark.demo import load_protocol
    workdir = tmp_path / "taken"
    (workdir / "nnUNet_raw" / f"Dataset{load_protocol()['dataset_id']:03d}_Other").mkdir(parents=True)
    return workdir


D = ["-d", str(DATASET_ID)]
# (case, command, arguments (or a builder of them), texts the refusal must contain, before issue 37)
BAD_OTHER_INPUTS = [
    ("plan_cpu max-patch-voxels 10", "nnUNetv2_ssl_plan_cpu", D + ["--max-patch-voxels", "10", "-o", "tiny"],
     ["cannot train on", "bottleneck as 1x1", "pass --max-patch-voxels 512 or more"]),  # wrote an 8x8x8 patch
    ("plan_cpu onto its source", "nnUNetv2_ssl_plan_cpu", D + ["-o", "nnUNetPlans", "--overwrite"],
     ["names the plans it is derived from"]),  # overwrote nnU-Net's own plans
    ("health checkpoint a folder", "nnUNetv2_ssl_health", lambda t, p: D + ["-p", PLANS, "--checkpoint", str(t)],
     ["is a folder", "checkpoint_final.pth"]),  # "no pretrained checkpoint", re-run pretraining
    ("health -o a folder", "nnUNetv2_ssl_health", lambda t, p: D + ["-p", PLANS, "-o", str(t)],
     ["is a folder, not a file"]),  # probed, then a traceback
    ("health bad option", "nnUNetv2_ssl_health", ["-d", "999", "--set", "readout=pre"],
     ["pcl/simclr/gcl option readout = 'pre': must be one of"]),  # issue 36: "no dataset 999" (opened it first)
    ("throughput -o inside a file", "nnUNetv2_ssl_throughput",
     lambda t, p: D + ["-p", PLANS, "-device", "cpu", "-o", str((t / "f").write_text("") or t / "f" / "x.json")],
     ["is a file, so", "cannot be written inside it"]),  # measured, then a traceback
    ("splits groups a folder", "nnUNetv2_ssl_splits", lambda t, p: D + ["--labeled", "2", "--groups", str(t)],
     ["is a folder, not a file"]),  # "does not exist"
    ("demo workdir a file", "nnUNetv2_ssl_demo",
     lambda t, p: ["--workdir", str((t / "w").write_text("") or t / "w")], ["is a file, not a folder"]),  # traceback
    ("demo device cuda", "nnUNetv2_ssl_demo", lambda t, p: ["--workdir", str(t / "demo"), "-device", "cuda"],
     ["no CUDA GPU"]),  # after writing the raw dataset and planning
    ("demo dataset id taken", "nnUNetv2_ssl_demo",
     lambda t, p: ["--workdir", str(_taken_demo_id(t))], ["dataset id 990 is taken by Dataset990_Other"]),
    ("render root not a checkout", "nnUNetv2_ssl_render", lambda t, p: ["--root", str(t)],
     ["is not a checkout of this repository"]),  # traceback
    ("import images a file", "nnUNetv2_ssl_import",
     lambda t, p: ["-i", str((t / "f").write_text("") or t / "f"), "-l", str(t), "-d", "555", "-n", "X", "--channel",
                   "MRI", "--labels", "background", "blob"], ["is not a folder"]),  # (already clean)
]


@pytest.mark.parametrize("command, args, expected", [c[1:] for c in BAD_OTHER_INPUTS],
                         ids=[c[0] for c in BAD_OTHER_INPUTS])
def test_bad_input_of_other_commands_fails_before_writing(pretrained, own_results, tmp_path, capsys, monkeypatch,
                                                          command, args, expected):
    import torch
    env, results = own_results
    args = args(tmp_path, pretrained) if callable(args) else args
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is there")
    prepared = os.path.join(pretrained["env"]["nnUNet_preprocessed"], pretrained["name"])
    before, around = tree(prepared), _every_path(tmp_path)
    fails_cleanly_in_process(_other_entries()[command], [command] + args, env, capsys, monkeypatch, *expected, "Fix:")
    assert tree(prepared) == before and os.listdir(results) == [] and _every_path(tmp_path) == around


# --- one writer per folder ------------------------------------------------------------------

def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_lock_refuses_a_live_writer_and_takes_over_a_stale_one(tmp_path):
    from nnunet_ssl.integration.folder_lock import LOCK_NAME, FolderLock
    folder = tmp_path / "SSLPretrain_x"
    messages = []
    with FolderLock(str(folder), "test", messages.append):
        assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(SSLUserError, match="another test .process"):
            FolderLock(str(folder), "test").__enter__()
    assert not (tmp_path / "SSLPretrain_x").exists()  # the lock made it and nothing else was written: gone again
    with FolderLock(str(tmp_path / "a" / "b"), "test"):
        pass
    assert not (tmp_path / "a").exists()  # every folder the lock made, not only the last
    folder.mkdir()
    (folder / LOCK_NAME).write_text(f"{_dead_pid()} {os.uname().nodename}\n")
    with FolderLock(str(folder), "test", messages.append):
        assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert "taking over a stale lock" in messages[0]
    assert not (folder / LOCK_NAME).exists() and folder.exists()  # a folder it did not make stays


def test_second_pretraining_on_a_locked_folder_is_refused(pretrained, own_results):
    env, results = own_results
    folder = results / pretrained["name"] / f"SSLPretrain_pcl__{PLANS}__3d_fullres"
    folder.mkdir(parents=True)
    writer = subprocess.Popen(["sleep", "60"])
    try:
        (folder / ".nnunet_ssl.lock").write_text(f"{writer.pid} {os.uname().nodename}\n")
        fails_cleanly(PRETRAIN + FIXTURE_SCHEDULE, f"another nnUNetv2_ssl_pretrain (process {writer.pid})",
                      f"kill {writer.pid}", env=env)
    finally:
        writer.kill()
    assert written_results(results) == [os.path.relpath(folder / ".nnunet_ssl.lock", results)]


# --- resume, final writes, interrupts ----------------------------------------------------------

def _copy_of_fixture_pretraining(pretrained, results) -> str:
    folder = os.path.join(results, pretrained["name"], os.path.basename(pretrained["folder"]))
    shutil.copytree(pretrained["folder"], folder)
    return folder


def test_damaged_final_gets_one_instruction_that_works(pretrained, own_results):
    env, results = own_results
    folder = _copy_of_fixture_pretraining(pretrained, results)
    final = os.path.join(folder, "checkpoint_final.pth")
    with open(final, "r+b") as f:
        f.truncate(os.path.getsize(final) // 2)
    leftover = os.path.join(folder, ".checkpoint_latest.pth.abc123.tmp")  # a kill inside atomic_write
    open(leftover, "w").close()
    fails_cleanly(PRETRAIN + FIXTURE_SCHEDULE, "checkpoint_final.pth is damaged", "with --c", env=env)
    assert not os.path.exists(leftover)
    out = run_ok(PRETRAIN + FIXTURE_SCHEDULE + ["--c"], env)  # the instruction
    assert "kept the damaged" in out.stdout and "saved pretrained encoder" in out.stdout
    assert os.path.isfile(final + ".corrupt")
    from nnunet_ssl.integration.checkpoint import load_encoder_checkpoint
    _, meta = load_encoder_checkpoint(final)
    assert meta.epochs_completed == 2 and [r["epoch"] for r in meta.resumes] == [2]
    with open(os.path.join(folder, "checkpoint_final.json")) as f:
        assert json.load(f) == meta.to_dict()


def test_lost_json_is_written_from_the_checkpoint(pretrained, own_results):
    env, results = own_results
    folder = _copy_of_fixture_pretraining(pretrained, results)
    os.remove(os.path.join(folder, "checkpoint_final.json"))  # a kill between the two writes
    out = run_ok(PRETRAIN + FIXTURE_SCHEDULE + ["--c"], env)
    assert "wrote the missing checkpoint_final.json" in out.stdout and "already finished" in out.stdout
    with open(os.path.join(folder, "checkpoint_final.json")) as f:
        assert json.load(f)["epochs_completed"] == 2


def test_sigterm_stops_like_ctrl_c_and_claims_no_checkpoint(pretrained, own_results):
    env, results = own_results
    process = subprocess.Popen(PRETRAIN + ["--epochs", "2", "--iterations-per-epoch", "10000", "--batch-size", "2"],
                               env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:  # the loop has started once it prints the run's summary line
        lines.append(line)
        if " cases, device cpu" in line:
            break
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    output = "".join(lines) + process.stdout.read()
    assert process.wait(timeout=60) == 143, output
    assert "interrupted before the first epoch finished: no checkpoint was written" in output
    assert "terminated (SIGTERM)" in output and "Traceback" not in output
    folder = results / pretrained["name"] / f"SSLPretrain_pcl__{PLANS}__3d_fullres"
    assert not (folder / ".nnunet_ssl.lock").exists() and not (folder / "checkpoint_latest.pth").exists()


def _pretrainer(pretrained, folder: str, epochs: int = 2, batch_size: int = 2):
    from nnunet_ssl.integration.dataset import open_preprocessed
    from nnunet_ssl.integration.pretrainer import Pretrainer, PretrainSchedule
    data = open_preprocessed(pretrained["name"], "3d_fullres", PLANS)
    schedule = PretrainSchedule(num_epochs=epochs, iterations_per_epoch=2, batch_size=batch_size, seed=3)
    trainer = Pretrainer(data, "pcl", {"projection_dim": 16}, schedule, torch.device("cpu"), folder)
    seen = []
    step = trainer.method.training_step
    trainer.method.training_step = lambda batch: (seen.append(batch["positions"].clone()), step(batch))[1]
    return trainer, seen


def test_resume_continues_the_data_stream_and_is_recorded(pretrained, tmp_path, single_torch_thread):
    straight, seen_straight = _pretrainer(pretrained, str(tmp_path / "straight"))
    straight.run()
    interrupted, _ = _pretrainer(pretrained, str(tmp_path / "resumed"))
    save = interrupted.save_latest

    def save_then_stop():
        save()
        raise KeyboardInterrupt

    interrupted.save_latest = save_then_stop
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    resumed, seen_resumed = _pretrainer(pretrained, str(tmp_path / "resumed"))
    resumed.resume()
    final = resumed.run()
    assert len(seen_straight) == 4 and len(seen_resumed) == 2
    for a, b in zip(seen_resumed, seen_straight[2:]):  # epoch 2's batches, not epoch 1's again
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(seen_resumed, seen_straight[:2]))
    from nnunet_ssl.integration.checkpoint import load_encoder_checkpoint
    _, meta = load_encoder_checkpoint(final)
    assert [r["epoch"] for r in meta.resumes] == [1] and meta.epochs_completed == 2


def test_a_rising_loss_stops_the_run_before_a_final_checkpoint(pretrained, tmp_path, single_torch_thread):
    folder = tmp_path / "run"
    trainer, _ = _pretrainer(pretrained, str(folder), epochs=3, batch_size=8)
    step = trainer.method.training_step

    def rising(batch):  # the real loss, scaled up from the second epoch on, as a too large lr does
        loss, metrics = step(batch)
        scale = 1.0 if trainer.epoch == 0 else 3.0
        return loss * scale, {**metrics, "loss": metrics["loss"] * scale}

    trainer.method.training_step = rising
    with pytest.raises(SSLUserError, match="diverges .epoch 2; checkpoint_latest.pth keeps epoch 1") as error:
        trainer.run()
    assert "--lr 0.01" in error.value.fix
    assert not (folder / "checkpoint_final.pth").exists()


def test_augmentation_workers_stop_when_training_fails(pretrained, tmp_path, monkeypatch, single_torch_thread):
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter

    import nnunet_ssl.integration.pretrainer as pretrainer
    made = []

    def two_workers(sampler, device, seed):
        made.append(NonDetMultiThreadedAugmenter(sampler, None, 2, num_cached=2, seeds=[seed, seed + 1]))
        return made[-1]

    monkeypatch.setattr(pretrainer, "_augmenter", two_workers)
    trainer, _ = _pretrainer(pretrained, str(tmp_path / "run"))
    running = []

    def fail(batch):
        running.extend(made[0]._processes)  # the workers that produced this batch
        raise RuntimeError("boom")

    trainer.method.training_step = fail
    with pytest.raises(RuntimeError, match="boom"):
        trainer.run()
    assert len(running) == 2 and not any(p.is_alive() for p in running)


# --- pure rules -------------------------------------------------------------------------------

def test_divergence_rule():
    from nnunet_ssl.blocks.health import supcon_collapse_loss
    from nnunet_ssl.integration.pretrainer import divergence_problem
    # batch 16, two views: the start value 4.7 is near it
    collapsed = supcon_collapse_loss(32, scale=0.1 / 0.07)
    assert collapsed == pytest.approx(0.1 / 0.07 * np.log(31))
    assert "diverges" in divergence_problem(6.8, 4.7, collapsed, 16)  # the issue's --lr 1e3 run
    assert divergence_problem(4.9, 4.7, collapsed, 16) is None  # a little noise
    assert divergence_problem(5.0, 3.0, 8.3, 16) is None  # a filling queue: rising, but below its collapsed value
    assert divergence_problem(6.8, None, collapsed, 16) is None  # the first epoch has nothing to compare with
    assert divergence_problem(100.0, 4.7, None, 16) is None  # a method without a collapsed value: no guard
    assert divergence_problem(100.0, 4.7, collapsed, 4) is None  # tiny batches: a random start is far above it


def test_epoch_seeds_differ_by_epoch_rank_and_seed():
    from nnunet_ssl.integration.pretrainer import epoch_seed
    seeds = {epoch_seed(s, r, e) for s in range(3) for r in range(2) for e in range(5)}
    assert len(seeds) == 30 and epoch_seed(0, 0, 1) == epoch_seed(0, 0, 1)


def test_largest_useful_patch():
    from nnunet_ssl.data.positions import largest_useful_patch
    assert largest_useful_patch([4, 8, 8], [[28, 32, 28], [30, 33, 28]], [16, 16, 16]) == [36, 40, 40]
    assert largest_useful_patch([4, 8], [[10, 12, 12]], [64, 64]) == [64, 64]  # the plans' patch when longer


def test_leftover_temp_files_are_removed(tmp_path):
    from nnunet_ssl.atomic_io import atomic_save_json, remove_leftover_temp_files
    atomic_save_json({"a": 1}, str(tmp_path / "x.json"))
    (tmp_path / ".x.json.k2j3.tmp").write_text("half")
    (tmp_path / "keep.tmp").write_text("a user's file")
    assert remove_leftover_temp_files(str(tmp_path)) == [".x.json.k2j3.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["keep.tmp", "x.json"]


def test_nifti_truncation_is_detected(tmp_path):
    from nnunet_ssl.integration.unlabeled import truncation_problem
    path = str(tmp_path / "a.nii")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 9, 10), np.float32)), path)
    assert truncation_problem(path) is None
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)
    assert "header needs" in truncation_problem(path)


# --- architecture compatibility ---------------------------------------------------------------

def _network_and_description(pretrained, change: dict):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_ssl.integration.encoder import build_planned_network, comparable_description
    prepared = os.path.join(pretrained["env"]["nnUNet_preprocessed"], pretrained["name"])
    with open(os.path.join(prepared, PLANS + ".json")) as f:
        plans = json.load(f)
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(change)
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    with open(os.path.join(prepared, "dataset.json")) as f:
        dataset_json = json.load(f)
    return build_planned_network(manager, config, dataset_json, 1), comparable_description(config)


@pytest.mark.parametrize("change, outcome", [
    ({}, "loads"),
    ({"n_conv_per_stage_decoder": [1, 1, 1]}, "loads"),  # the decoder is not pretrained
    ({"nonlin": "torch.nn.ReLU"}, "refused"),
    ({"nonlin_kwargs": {"inplace": True, "negative_slope": 0.2}}, "refused"),
])
def test_architecture_hash_is_compared_on_load(pretrained, monkeypatch, change, outcome):
    from nnunet_ssl.integration.encoder_loader import load_pretrained_encoder
    from nnunet_ssl.integration.provenance import ALLOW_PLANS_CHANGE_ENV
    final = os.path.join(pretrained["folder"], "checkpoint_final.pth")
    if "n_conv_per_stage_decoder" in change:
        change["n_conv_per_stage_decoder"] = [1] * (len(_network_and_description(pretrained, {})[1]["arch_kwargs"]
                                                        ["n_conv_per_stage_decoder"]))
    network, description = _network_and_description(pretrained, change)
    if outcome == "loads":
        assert load_pretrained_encoder(network, final, description).warnings == []
        return
    field = next(iter(change))
    with pytest.raises(SSLUserError, match=f"pretrained with another architecture(.|\n)*{field}:") as error:
        load_pretrained_encoder(network, final, description)
    assert ALLOW_PLANS_CHANGE_ENV in error.value.fix
    monkeypatch.setenv(ALLOW_PLANS_CHANGE_ENV, "1")
    report = load_pretrained_encoder(network, final, description)
    assert field in report.warnings[0] and field in report.summary()


# --- issue 37: pure rules -----------------------------------------------------------------------

def test_smallest_patch_the_network_trains_on():
    from nnunet_ssl.data.positions import bottleneck_shape, smallest_trainable_patch, too_small_patch_problem
    assert bottleneck_shape([16, 8, 4], [8, 8, 4]) == [2, 1, 1]
    assert too_small_patch_problem([16, 8, 4], [8, 8, 4]) is None and too_small_patch_problem([8, 8, 8], [8, 8, 4]) is None
    assert "as 1x1x1 voxel(s)" in too_small_patch_problem([8, 8, 4], [8, 8, 4])
    assert "hold 512 voxels, e.g. [16, 8, 4]" in too_small_patch_problem([8, 8, 4], [8, 8, 4])
    assert smallest_trainable_patch([4, 4]) == [8, 4]


def test_shrunk_cpu_patch_keeps_two_bottleneck_voxels_where_the_budget_allows():
    from nnunet_ssl.integration.cpu_plans import shrink_patch
    # rounding alone gives one stride per axis ([8, 8, 8], a 1-voxel bottleneck): the longest axis gets a second
    assert shrink_patch([40, 40, 40], [8, 8, 8], 1100) == [16, 8, 8]
    assert shrink_patch([32, 32, 28], [8, 8, 4], 10) == [8, 8, 4]  # no budget for two: plan_cpu refuses it
    assert shrink_patch([32, 48, 32], [16, 16, 16], 32 * 48 * 32) == [32, 48, 32]  # unchanged within the budget


def test_unlabeled_size_bound():
    from nnunet_ssl.integration.unlabeled import UNLABELED_SIZE_FACTOR, oversize_problem, resampled_shape
    assert resampled_shape([28, 32, 28], [20.0, 20.0, 20.0], [0, 1, 2], [1.0, 1.0, 1.0]) == [560, 640, 560]
    assert resampled_shape([10, 20, 30], [1.0, 2.0, 3.0], [2, 0, 1], [1.5, 1.5, 1.5]) == [60, 7, 27]
    assert resampled_shape([10, 20, 30], [5.0, 1.0, 1.0], [0, 1, 2], [0.5, 0.5]) == [10, 40, 60]  # 2d keeps axis 0
    largest = (32 * 32 * 28, [32, 32, 28])
    assert oversize_problem([28, 32, 28], [0.25, 0.25, 0.25], [0, 1, 2], [1.0, 1.0, 1.0], largest) is None
    assert oversize_problem([56, 64, 56], [1.0, 1.0, 1.0], [0, 1, 2], [1.0, 1.0, 1.0], largest) is None  # 7x
    problem = oversize_problem([60, 64, 56], [1.0, 1.0, 1.0], [0, 1, 2], [1.0, 1.0, 1.0], largest)  # 7.5x
    assert problem is None and UNLABELED_SIZE_FACTOR == 8
    assert "would be resampled to [60, 64, 64]" in oversize_problem([60, 64, 64], [1.0] * 3, [0, 1, 2], [1.0] * 3,
                                                                    (60 * 64 * 64 // 9, [1]))


def test_continuation_conflict_names_what_differs():
    from nnunet_ssl.integration.pretrainer import continuation_conflict
    saved = {"case_ids": ["a", "b"], "hparams": {"method": {"theta": 0.1}, "schedule": {"patch_size": [8, 8]},
                                                 "derived": {"x": 1}}}
    assert continuation_conflict(saved, {"method": {"theta": 0.1}, "schedule": {"patch_size": (8, 8)}}, ["b", "a"],
                                 "f", parts=("method", "schedule")) is None  # tuples as saved to JSON
    error = continuation_conflict(saved, {"method": {"theta": 0.2}, "schedule": {"patch_size": [8, 8]},
                                          "derived": {"x": 2}}, ["a", "b"], "f")
    assert "method.theta 0.1 there, 0.2 now; derived.x 1 there, 2 now" in error.problem
    assert "1 added" in continuation_conflict(saved, saved["hparams"], ["a", "b", "c"], "f").problem
