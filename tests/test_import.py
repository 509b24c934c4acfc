"""nnUNetv2_ssl_import (issue 34, item 1): paired image/label folders (acdc_train70's layout) become an nnU-Net
raw dataset; the patient grouping of its ED/ES frames then holds in every fold the splits command makes."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import read_json, run_entry, write_minimal_preprocessed

from nnunet_ssl.cli.import_dataset import import_entry
from nnunet_ssl.cli.splits import splits_entry
from nnunet_ssl.data.folds import split_patients

PATIENTS = [f"patient{p:03d}" for p in (3, 4, 5, 6, 9, 10)]
CASES = [f"{p}_frame{f:02d}" for p in PATIENTS for f in (1, 2)]  # ED and ES, named as in acdc_train70
LABELS = ["background", "RV", "MYO", "LV"]
ARGS = ["-d", "27", "-n", "ACDC", "--channel", "cineMRI", "--labels", *LABELS]


def _volume(path: str, array: np.ndarray, spacing=(1.5, 1.5, 10.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, path)


@pytest.fixture
def source(tmp_path):
    """Two folders like shared/datasets/acdc_train70: uint8 images, labels 0-3, same file names."""
    rng = np.random.default_rng(0)
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    for i, case in enumerate(CASES):
        label = np.zeros((6 + i % 3, 20, 18), np.uint8)
        label[2:4, 5:9, 4:8], label[2:4, 9:12, 4:8], label[2:4, 12:15, 4:8] = 1, 2, 3
        _volume(str(tmp_path / "images" / f"{case}.nii.gz"), rng.integers(0, 255, label.shape).astype(np.uint8))
        _volume(str(tmp_path / "labels" / f"{case}.nii.gz"), label)
    return tmp_path


def _import(monkeypatch, capsys, images: str, labels: str, *args: str) -> tuple[int, str]:
    return run_entry(import_entry, "nnUNetv2_ssl_import", monkeypatch, capsys, "-i", images, "-l", labels,
                     *(args or ARGS))


def test_import_writes_an_nnunet_raw_dataset_and_the_frames_of_a_patient_stay_together(
        nnunet_env, source, monkeypatch, capsys):
    code, output = _import(monkeypatch, capsys, str(source / "images"), str(source / "labels"))
    assert code == 0, output
    folder = os.path.join(nnunet_env["nnUNet_raw"], "Dataset027_ACDC")
    dataset = read_json(folder, "dataset.json")
    assert dataset["channel_names"] == {"0": "cineMRI"} and dataset["numTraining"] == len(CASES)
    assert dataset["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert sorted(os.listdir(os.path.join(folder, "imagesTr"))) == sorted(f"{c}_0000.nii.gz" for c in CASES)
    assert sorted(os.listdir(os.path.join(folder, "labelsTr"))) == sorted(f"{c}.nii.gz" for c in CASES)
    with open(source / "labels" / f"{CASES[5]}.nii.gz", "rb") as a, \
            open(os.path.join(folder, "labelsTr", f"{CASES[5]}.nii.gz"), "rb") as b:
        assert a.read() == b.read()  # copied, not re-encoded
    assert [n for n in os.listdir(nnunet_env["nnUNet_raw"])] == ["Dataset027_ACDC"]  # no temporary folder left

    # grouping by patient on the imported case ids: the splits command as docs/datasets/acdc.md runs it
    cases = sorted(n[: -len("_0000.nii.gz")] for n in os.listdir(os.path.join(folder, "imagesTr")))
    preprocessed = write_minimal_preprocessed(nnunet_env, "Dataset027_ACDC", cases, "cineMRI",
                                              dataset["labels"])
    code, output = run_entry(splits_entry, "nnUNetv2_ssl_splits", monkeypatch, capsys, "-d", "27",
                             "--labeled", "1", "3", "--base-folds", "0", "1", "--group-pattern", r"^(patient\d+)_")
    assert code == 0, output
    splits = read_json(preprocessed, "splits_final.json")
    groups = {c: c.split("_")[0] for c in CASES}
    for fold in read_json(preprocessed, "label_budget_folds.json")["folds"]:
        split = splits[fold["fold"]]
        assert split_patients(split, groups) == []  # never a patient's ED in training and ES in validation
        labeled = {groups[c] for c in split["train"]}
        assert len(labeled) == fold["labeled"] and len(split["train"]) == 2 * fold["labeled"]  # both frames
    assert all(split_patients(s, groups) == [] for s in splits[5:10])  # the grouped base folds


def _mismatch(source):
    os.remove(source / "labels" / f"{CASES[0]}.nii.gz")


def _bad_label(source):
    _volume(str(source / "labels" / f"{CASES[1]}.nii.gz"), np.full((7, 20, 18), 7, np.uint8))  # its own shape


def _other_spacing(source):
    _volume(str(source / "labels" / f"{CASES[2]}.nii.gz"), np.zeros((6, 20, 18), np.uint8), (1.5, 1.5, 5.0))
    _volume(str(source / "images" / f"{CASES[2]}.nii.gz"), np.zeros((6, 20, 18), np.uint8), (1.5, 1.5, 10.0))


def _mixed_types(source):
    os.rename(source / "images" / f"{CASES[0]}.nii.gz", source / "images" / f"{CASES[0]}.mha")


def _not_an_image(source):
    (source / "images" / "notes.txt").write_text("x")


@pytest.mark.parametrize("damage, args, message", [
    (_mismatch, None, "1 image(s) without a label"),
    (_bad_label, None, "holds values [7]; --labels declares 0-3"),
    (_other_spacing, None, "differ in size, spacing or origin"),
    (_mixed_types, None, "mix file types"),
    (_not_an_image, None, "files nnU-Net cannot read, e.g. ['notes.txt']"),
    (None, ["-d", "27", "-n", "AC_DC", "--channel", "MRI", "--labels", *LABELS], "not usable in a folder name"),
    (None, ["-d", "1000", "-n", "ACDC", "--channel", "MRI", "--labels", *LABELS], "outside nnU-Net's 1-999"),
    (None, ["-d", "27", "-n", "ACDC", "--channel", "MRI", "--labels", "background"], "at least one class"),
])
def test_bad_sources_are_refused_and_nothing_is_written(nnunet_env, source, monkeypatch, capsys, damage, args,
                                                        message):
    if damage:
        damage(source)
    code, output = _import(monkeypatch, capsys, str(source / "images"), str(source / "labels"), *(args or []))
    assert code == 2 and message in output and "Fix:" in output and "Traceback" not in output, output
    assert os.listdir(nnunet_env["nnUNet_raw"]) == []


def test_wrong_kind_of_path_and_a_taken_id_are_refused_without_touching_anything(nnunet_env, source, monkeypatch,
                                                                                 capsys):
    image = str(source / "images" / f"{CASES[0]}.nii.gz")
    code, output = _import(monkeypatch, capsys, image, str(source / "labels"))
    assert code == 2 and f"-i {image} is not a folder" in output, output
    code, output = _import(monkeypatch, capsys, str(source / "images"), str(source / "nowhere"))
    assert code == 2 and "is not a folder" in output, output
    assert os.listdir(nnunet_env["nnUNet_raw"]) == []

    earlier = os.path.join(nnunet_env["nnUNet_raw"], "Dataset027_Other")
    os.makedirs(earlier)
    with open(os.path.join(earlier, "dataset.json"), "w") as f:
        json.dump({"mine": True}, f)
    code, output = _import(monkeypatch, capsys, str(source / "images"), str(source / "labels"))
    assert code == 2 and "dataset id 27 is taken" in output and "Dataset027_Other" in output, output
    assert os.listdir(nnunet_env["nnUNet_raw"]) == ["Dataset027_Other"]
    assert read_json(earlier, "dataset.json") == {"mine": True}
