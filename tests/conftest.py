"""Shared fixtures: a tiny synthetic nnU-Net dataset and isolated nnU-Net folders."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch


def write_synthetic_dataset(raw_root: str, dataset_id: int = 987, n_cases: int = 8, seed: int = 0) -> str:
    """nnU-Net raw dataset of small 3D images whose label is a bright ellipsoid at a case-specific place."""
    rng = np.random.default_rng(seed)
    name = f"Dataset{dataset_id:03d}_Synthetic"
    folder = os.path.join(raw_root, name)
    os.makedirs(os.path.join(folder, "imagesTr"), exist_ok=True)
    os.makedirs(os.path.join(folder, "labelsTr"), exist_ok=True)
    for i in range(n_cases):
        shape = (28 + 2 * (i % 3), 32, 28)
        z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
        centre = [rng.uniform(0.35, 0.65) * s for s in shape]
        blob = ((z - centre[0]) / 5) ** 2 + ((y - centre[1]) / 6) ** 2 + ((x - centre[2]) / 4) ** 2 < 1
        image = (z / shape[0] * 50 + rng.normal(0, 10, shape) + 100 * blob).astype(np.float32)
        for array, sub, suffix in ((image, "imagesTr", "_0000"), (blob.astype(np.uint8), "labelsTr", "")):
            img = sitk.GetImageFromArray(array)
            img.SetSpacing((1.0, 1.0, 1.0))
            sitk.WriteImage(img, os.path.join(folder, sub, f"case_{i:03d}{suffix}.nii.gz"))
    import json
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "blob": 1},
                   "numTraining": n_cases, "file_ending": ".nii.gz"}, f)
    return name


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch):
    """nnUNet_raw/preprocessed/results in a temp folder, set for this process and its children."""
    env = {}
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        path = tmp_path / var
        path.mkdir()
        monkeypatch.setenv(var, str(path))
        env[var] = str(path)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("nnUNet_compile", "false")
    return env


def run_command(args: list[str], check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run an installed console script (or python -m) and return its output."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def fails_cleanly(args: list[str], *expected: str, env: dict | None = None) -> str:
    """Run a command that must fail for a user mistake: non-zero exit, every expected text in the
    output, and no traceback. Returns the output."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output[-3000:]}"
    return output


@pytest.fixture
def single_torch_thread():
    """Tiny convolutions: one thread is fastest, and far faster on a busy machine than two waiting on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_entry(entry, argv0: str, monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """A console script's entry point run in this process (the same code path as the installed script):
    its exit code and everything it printed."""
    monkeypatch.setattr(sys, "argv", [argv0, *args])
    code = 0
    try:
        entry()
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def write_minimal_preprocessed(env: dict, name: str, case_ids, channel: str, labels: dict,
                               splits: list[dict] | None = None) -> str:
    """A preprocessed dataset folder with what the splits command reads: dataset.json, empty case files of
    one configuration and optionally splits_final.json (indented, not nnU-Net's formatting: contents must
    survive, not bytes)."""
    folder = os.path.join(env["nnUNet_preprocessed"], name)
    data = os.path.join(folder, "nnUNetPlans_3d_fullres")
    os.makedirs(data)
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": channel}, "labels": labels, "numTraining": len(case_ids),
                   "file_ending": ".nii.gz"}, f)
    for case in case_ids:
        for suffix in (".b2nd", "_seg.b2nd", ".pkl"):
            open(os.path.join(data, case + suffix), "w").close()
    if splits is not None:
        with open(os.path.join(folder, "splits_final.json"), "w") as f:
            json.dump(splits, f, indent=2)
    return folder


def read_json(folder: str, name: str):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def script(name: str) -> str:
    """Path of a console script installed next to this interpreter."""
    return os.path.join(os.path.dirname(sys.executable), name)


DATASET_ID = 987
PLANS = "nnUNetPlans_cpu"


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
    """A planned, preprocessed and PCL-pretrained synthetic dataset; yields the nnU-Net env vars."""
    root = tmp_path_factory.mktemp("nnunet")
    env = {var: str(root / var) for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for path in env.values():
        os.makedirs(path)
    saved = {k: os.environ.get(k) for k in (*env, "nnUNet_n_proc_DA", "nnUNet_def_n_proc", "nnUNet_compile",
                                             "nnUNet_ssl_allow_unhealthy")}
    os.environ.update(env)
    os.environ["nnUNet_compile"] = "false"
    name = write_synthetic_dataset(env["nnUNet_raw"], DATASET_ID)
    run_command([script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2"])
    os.environ.update(nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1")
    # 6 pretraining steps are plumbing, not learning: the health gate (tested on its own) would refuse them
    os.environ["nnUNet_ssl_allow_unhealthy"] = "1"
    run_command([script("nnUNetv2_ssl_plan_cpu"), "-d", str(DATASET_ID)])
    out = run_command([script("nnUNetv2_ssl_pretrain"), "-d", str(DATASET_ID), "-p", PLANS, "-device", "cpu",
                       "--epochs", "2", "--iterations-per-epoch", "3", "--batch-size", "4"])
    folder = os.path.join(env["nnUNet_results"], name, f"SSLPretrain_pcl__{PLANS}__3d_fullres")
    yield {"env": env, "name": name, "folder": folder, "pretrain_output": out.stdout}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
