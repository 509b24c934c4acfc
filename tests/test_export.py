"""nnUNetv2_ssl_export on a model folder laid out as nnUNetv2_train writes it: the copy names stock
nnUNetTrainer, keeps the weights, records its origin, and never overwrites."""
import json
import os

import pytest
import torch
from conftest import run_entry

from nnunet_ssl.cli.export import export_entry

NAME = "Dataset654_Export"


def _entry(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    return run_entry(export_entry, "nnUNetv2_ssl_export", monkeypatch, capsys, *args)


def _trained_model(results: str) -> str:
    folder = os.path.join(results, NAME, "SSLInitTrainer_cpu500it__nnUNetPlans_cpu__3d_fullres")
    os.makedirs(os.path.join(folder, "fold_0", "validation"))
    for file in ("plans.json", "dataset.json"):
        with open(os.path.join(folder, file), "w") as f:
            json.dump({"file": file}, f)
    with open(os.path.join(folder, "fold_0", "validation", "summary.json"), "w") as f:
        json.dump({"foreground_mean": {"Dice": 0.5}}, f)
    torch.save({"trainer_name": "SSLInitTrainer_cpu500it", "network_weights": {"w": torch.arange(4.0)}},
               os.path.join(folder, "fold_0", "checkpoint_final.pth"))
    return folder


def test_export_rewrites_the_trainer_name_and_refuses_to_overwrite(nnunet_env, monkeypatch, capsys, tmp_path):
    _trained_model(nnunet_env["nnUNet_results"])
    out = str(tmp_path / "shared")
    args = ("-d", "654", "-p", "nnUNetPlans_cpu", "-tr", "SSLInitTrainer_cpu500it", "-o", out)
    code, output = _entry(monkeypatch, capsys, *args)
    assert code == 0, output
    target = os.path.join(out, NAME, "nnUNetTrainer__nnUNetPlans_cpu__3d_fullres")
    checkpoint = torch.load(os.path.join(target, "fold_0", "checkpoint_final.pth"), weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    assert torch.equal(checkpoint["network_weights"]["w"], torch.arange(4.0))
    assert sorted(os.listdir(target)) == ["dataset.json", "fold_0", "nnunet_ssl_provenance.json", "plans.json"]
    with open(os.path.join(target, "nnunet_ssl_provenance.json")) as f:
        provenance = json.load(f)
    assert provenance["original_trainer"] == "SSLInitTrainer_cpu500it" and provenance["folds"] == ["0"]
    assert "nnUNetv2_predict" in output and "-tr nnUNetTrainer -f 0" in output

    code, output = _entry(monkeypatch, capsys, *args)
    assert code == 2 and "exists; nothing was overwritten" in output and "Traceback" not in output, output


def test_export_without_nnunet_results_says_so(nnunet_env, monkeypatch, capsys, tmp_path):
    os.makedirs(os.path.join(nnunet_env["nnUNet_raw"], NAME))
    monkeypatch.delenv("nnUNet_results")
    code, output = _entry(monkeypatch, capsys, "-d", "654", "-o", str(tmp_path / "shared"))
    assert code == 2 and "nnUNet_results is not set" in output and "Traceback" not in output, output


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


# (case, what to break before exporting, -o relative to tmp_path, texts the refusal must contain); issue 37
BAD_EXPORTS = [
    ("truncated checkpoint", "truncate", "shared", ["checkpoint_final.pth is not readable", "nothing was exported"]),
    ("-o is a file", "file", "a_file", ["a_file is a file, not a folder", "pass -o a results folder"]),
    ("dataset folder under -o is a file", "dataset file", "shared", [f"{NAME} is a file, not a folder"]),
]


@pytest.mark.parametrize("break_with, out, expected", [c[1:] for c in BAD_EXPORTS], ids=[c[0] for c in BAD_EXPORTS])
def test_failed_export_leaves_nothing_and_can_run_again(nnunet_env, monkeypatch, capsys, tmp_path, break_with, out,
                                                        expected):
    source = _trained_model(nnunet_env["nnUNet_results"])
    checkpoint = os.path.join(source, "fold_0", "checkpoint_final.pth")
    intact = open(checkpoint, "rb").read()
    if break_with == "truncate":
        _truncate(checkpoint)
    elif break_with == "file":
        (tmp_path / "a_file").write_text("")
    else:
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / NAME).write_text("")
    before = sorted(str(p) for p in tmp_path.rglob("*") if "nnUNet_" not in str(p))
    args = ("-d", "654", "-p", "nnUNetPlans_cpu", "-tr", "SSLInitTrainer_cpu500it", "-o", str(tmp_path / out))
    code, output = _entry(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" not in output, output
    for text in expected:
        assert text in output, output
    assert sorted(str(p) for p in tmp_path.rglob("*") if "nnUNet_" not in str(p)) == before  # nothing written
    if break_with == "truncate":  # repaired, the same command runs: no half export blocks it
        open(checkpoint, "wb").write(intact)
        code, output = _entry(monkeypatch, capsys, *args)
        assert code == 0 and "exported 1 fold(s)" in output, output
