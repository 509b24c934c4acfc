"""Unlabeled images (--unlabeled DIR, --imagesTs): preprocessed with the dataset's plans into a plugin-owned
folder, checked with clear errors, and recorded in the checkpoint's case_ids."""
import json
import os
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DATASET_ID, PLANS, fails_cleanly, script

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.dataset import open_preprocessed
from nnunet_ssl.integration.unlabeled import PLUGIN_FOLDER, find_cases

CONFIG = "3d_fullres"


def _write_images(folder, names: list[str], seed: int = 1, shape=(30, 32, 28)) -> None:
    """Raw images named NAME.nii.gz (NAME includes the _XXXX channel suffix), like the dataset's."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name in names:
        z = np.arange(shape[0])[:, None, None] * np.ones(shape)
        image = sitk.GetImageFromArray((z / shape[0] * 50 + rng.normal(0, 10, shape)).astype(np.float32))
        image.SetSpacing((1.0, 1.0, 1.0))
        sitk.WriteImage(image, os.path.join(str(folder), f"{name}.nii.gz"))


def _snapshot(folder: str) -> dict:
    return {f: os.path.getmtime(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}


def _preprocessed_root(pretrained) -> str:
    return os.path.join(pretrained["env"]["nnUNet_preprocessed"], pretrained["name"])


def test_preprocessed_into_plugin_folder_once(pretrained, tmp_path):
    extra = tmp_path / "extra_scans"
    _write_images(extra, ["scan_a_0000", "scan_b_0000"])
    (extra / "README.txt").write_text("other file kinds are ignored")
    root = _preprocessed_root(pretrained)
    nnunet_folder = os.path.join(root, "nnUNetPlans_3d_fullres")
    before = _snapshot(nnunet_folder)

    data = open_preprocessed(DATASET_ID, CONFIG, PLANS, [str(extra)])
    ids = ["unlabeled__extra_scans__scan_a", "unlabeled__extra_scans__scan_b"]
    assert data.unlabeled_case_ids == ids
    assert data.case_ids == [f"case_{i:03d}" for i in range(8)] + ids
    assert data.labeled_case_ids == [f"case_{i:03d}" for i in range(8)]
    plugin = os.path.join(root, PLUGIN_FOLDER, "nnUNetPlans_3d_fullres")
    assert data.unlabeled_folder == plugin
    assert {f"{i}{s}" for i in ids for s in (".b2nd", "_seg.b2nd", ".pkl")} <= set(os.listdir(plugin))
    assert _snapshot(nnunet_folder) == before  # nnU-Net's own folder: same files, untouched

    cases = data.open_cases()
    image, seg, prev, properties = cases.load_case(ids[0])
    assert image.shape[0] == data.num_input_channels == 1 and image.ndim == 4 and prev is None
    assert seg.shape[1:] == image.shape[1:]
    for key in ("spacing", "shape_before_cropping", "bbox_used_for_cropping",
                "shape_after_cropping_and_before_resampling"):
        assert key in properties
    assert list(properties["shape_before_cropping"]) == [30, 32, 28]
    labeled_image, *_ = cases.load_case("case_000")
    assert labeled_image.shape[0] == 1

    first = _snapshot(plugin)
    again = open_preprocessed(DATASET_ID, CONFIG, PLANS, [str(extra)])  # a re-run only checks
    assert again.case_ids == data.case_ids and _snapshot(plugin) == first

    _write_images(extra, ["scan_b_0000"], seed=2)  # a changed source file is preprocessed again
    open_preprocessed(DATASET_ID, CONFIG, PLANS, [str(extra)])
    after = _snapshot(plugin)
    assert after[f"{ids[0]}.pkl"] == first[f"{ids[0]}.pkl"]
    assert after[f"{ids[1]}.pkl"] != first[f"{ids[1]}.pkl"]
    assert not [f for f in after if f.startswith(".tmp")]

    plain = open_preprocessed(DATASET_ID, CONFIG, PLANS)  # without unlabeled folders nothing changes
    assert plain.case_ids == data.labeled_case_ids and plain.unlabeled_case_ids == []
    assert type(plain.open_cases()).__name__ == "nnUNetDatasetBlosc2"


def test_images_ts_and_duplicate_folders(pretrained, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    images_ts = raw / pretrained["name"] / "imagesTs"
    _write_images(images_ts, ["test_1_0000"])
    monkeypatch.setenv("nnUNet_raw", str(raw))
    data = open_preprocessed(DATASET_ID, CONFIG, PLANS, [str(images_ts)], include_images_ts=True)
    assert data.unlabeled_case_ids == ["unlabeled__imagesTs__test_1"]  # the same folder twice counts once

    other = tmp_path / "elsewhere" / "imagesTs"
    _write_images(other, ["test_2_0000"])
    with pytest.raises(SSLUserError, match="same name 'imagesTs'"):
        open_preprocessed(DATASET_ID, CONFIG, PLANS, [str(other)], include_images_ts=True)


def test_channel_checks_name_the_file(tmp_path):
    two = {"0": "T1", "1": "T2"}
    _write_images(tmp_path, ["a_0000", "a_0001", "b_0000"], shape=(4, 4, 4))
    with pytest.raises(SSLUserError) as error:
        find_cases(str(tmp_path), ".nii.gz", two)
    assert str(tmp_path / "b_0001.nii.gz") in error.value.problem and "missing" in error.value.problem
    with pytest.raises(SSLUserError) as error:
        find_cases(str(tmp_path), ".nii.gz", {"0": "MRI"})
    assert str(tmp_path / "a_0001.nii.gz") in error.value.problem and "extra channel" in error.value.problem
    (tmp_path / "b_0001.nii.gz").write_bytes((tmp_path / "b_0000.nii.gz").read_bytes())
    assert find_cases(str(tmp_path), ".nii.gz", two) == {
        c: [str(tmp_path / f"{c}_000{i}.nii.gz") for i in range(2)] for c in ("a", "b")}
    (tmp_path / "badname.nii.gz").write_bytes(b"")
    with pytest.raises(SSLUserError, match="badname.nii.gz is not named like an nnU-Net raw image"):
        find_cases(str(tmp_path), ".nii.gz", two)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SSLUserError, match="no images ending in '.nii.gz'"):
        find_cases(str(tmp_path / "empty"), ".nii.gz", two)


def _results_env(tmp_path, **extra) -> dict:
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    return {**os.environ, "nnUNet_results": str(results), "nnUNet_n_proc_DA": "0", **extra}


def test_bad_input_fails_cleanly(pretrained, tmp_path):
    base = [script("nnUNetv2_ssl_pretrain"), "-d", str(DATASET_ID), "-p", PLANS, "-device", "cpu"]
    broken = tmp_path / "broken"
    _write_images(broken, ["fine_0000"])
    (broken / "garbage_0000.nii.gz").write_bytes(b"this is not an image" * 10)
    with pytest.raises(SSLUserError, match="cannot read .*garbage_0000.nii.gz"):
        open_preprocessed(DATASET_ID, CONFIG, PLANS, [str(broken)])
    flat = tmp_path / "flat"
    flat.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((32, 28), np.float32)), str(flat / "slice_0000.nii.gz"))
    with pytest.raises(SSLUserError, match="slice_0000.nii.gz is a 2D image, but .* images are 3D"):
        open_preprocessed(DATASET_ID, CONFIG, PLANS, [str(flat)])
    fails_cleanly(base + ["--unlabeled", str(broken)], str(broken / "garbage_0000.nii.gz"), "Fix:",
                  env=_results_env(tmp_path))
    empty_raw = tmp_path / "raw"
    empty_raw.mkdir()
    fails_cleanly(base + ["--imagesTs"],
                  f"--imagesTs was requested but {empty_raw / pretrained['name'] / 'imagesTs'} does not exist", "Fix:",
                  env=_results_env(tmp_path, nnUNet_raw=str(empty_raw)))
    assert not os.listdir(tmp_path / "results")  # nothing was started


def test_cli_records_unlabeled_cases(pretrained, tmp_path):
    extra = tmp_path / "cli_extra"
    _write_images(extra, ["u1_0000", "u2_0000"], seed=3)
    env = _results_env(tmp_path)
    result = subprocess.run([script("nnUNetv2_ssl_pretrain"), "-d", str(DATASET_ID), "-p", PLANS, "-device", "cpu",
                             "--unlabeled", str(extra), "--epochs", "1", "--iterations-per-epoch", "1",
                             "--batch-size", "4"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "unlabeled: 2 case(s) from 1 folder(s), 2 preprocessed now" in result.stdout
    meta_file = os.path.join(env["nnUNet_results"], pretrained["name"], f"SSLPretrain_pcl__{PLANS}__{CONFIG}",
                             "checkpoint_final.json")
    with open(meta_file) as f:
        case_ids = json.load(f)["case_ids"]
    assert {"unlabeled__cli_extra__u1", "unlabeled__cli_extra__u2", "case_000"} <= set(case_ids)
    assert len(case_ids) == 10

    os.remove(os.path.join(os.path.dirname(meta_file), "checkpoint_final.pth"))  # as if interrupted
    fails_cleanly([script("nnUNetv2_ssl_pretrain"), "-d", str(DATASET_ID), "-p", PLANS, "-device", "cpu", "--c"],
                  "--c with other cases than the run", "0 added", "2 missing", "--unlabeled", env=env)
