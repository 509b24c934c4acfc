"""The demo as a library call: DemoSpec refuses what the command refuses, before anything is written."""
import json
import os

import pytest

from nnunet_ssl.benchmark.demo import DemoSpec, load_protocol, raw_dataset_written, run_demo, write_raw_dataset
from nnunet_ssl.errors import SSLUserError


def _every_path(folder) -> list[str]:
    return sorted(os.path.join(d, name) for d, dirs, files in os.walk(folder) for name in dirs + files)


def _workdir(tmp_path, made: str = "") -> str:
    """A workdir holding ``made`` (a folder; "file" makes the workdir itself a file)."""
    workdir = tmp_path / "w"
    if made == "file":
        workdir.write_text("")
    elif made:
        (workdir / made).mkdir(parents=True)
    return str(workdir)


@pytest.mark.parametrize("device, made, expected", [
    ("tpu", "", "-device 'tpu' is not one of cpu, cuda, mps"),
    ("cpu", "file", "is a file, not a folder"),
    ("cpu", "nnUNet_raw/Dataset990_Other", "dataset id 990 is taken by Dataset990_Other"),
    ("cpu", "nnUNet_raw/Dataset990_HippocampusDemo", "exists and is not the demo's dataset"),
], ids=["unknown device", "workdir a file", "dataset id taken", "another dataset in the demo's folder"])
def test_a_bad_spec_is_refused_by_run_demo_before_anything_is_written(tmp_path, device, made, expected):
    spec = DemoSpec(_workdir(tmp_path, made), device)
    around = _every_path(tmp_path)
    with pytest.raises(SSLUserError, match=expected):
        run_demo(spec)
    assert _every_path(tmp_path) == around


def test_the_raw_dataset_is_written_once_and_found_again(tmp_path):
    protocol = load_protocol()
    raw = str(tmp_path / "nnUNet_raw")
    assert not raw_dataset_written(raw, protocol)
    cases = write_raw_dataset(raw, protocol)
    folder = tmp_path / "nnUNet_raw" / protocol["dataset_name"]
    assert len(cases) == 60 and sorted(os.listdir(folder / "imagesTr"))[0] == f"{cases[0]}_0000.nii.gz"
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 60
    assert raw_dataset_written(raw, protocol) and DemoSpec(str(tmp_path)).check() is None
    before = os.path.getmtime(folder / "dataset.json")
    assert write_raw_dataset(raw, protocol) == cases and os.path.getmtime(folder / "dataset.json") == before


def test_without_a_workdir_the_demo_uses_the_nnunet_folders_when_all_three_are_set(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    assert DemoSpec().folders()["nnUNet_results"] == str(tmp_path / "nnUNet_results")
    assert DemoSpec(str(tmp_path / "w")).folders()["nnUNet_raw"] == str(tmp_path / "w" / "nnUNet_raw")
