"""The encoder checkpoint format: round trip, atomic writes and clear errors for bad files."""
import os

import numpy as np
import pytest
import torch

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration import checkpoint as ckpt
from nnunet_ssl.integration.checkpoint import (FORMAT_NAME, FORMAT_VERSION, SSLCheckpointMeta, atomic_torch_save,
                                               load_encoder_checkpoint, save_encoder_checkpoint)


def make_meta(**overrides) -> SSLCheckpointMeta:
    values = dict(
        method="pcl",
        hparams={"method": {"theta": 0.1, "scaling": [0.7, 1.3]}, "schedule": {"num_epochs": 2},
                 "derived": {"patch_size": [16, 32, 32]}},
        dataset_name="Dataset987_Synthetic",
        plans_identifier="nnUNetPlans_cpu",
        configuration="3d_fullres",
        architecture_hash="ab" * 32,
        architecture={"network_class_name": "PlainConvUNet", "arch_kwargs": {"n_stages": 3}},
        num_input_channels=1,
        channel_names={"0": "MRI"},
        normalization_schemes=["ZScoreNormalization"],
        seed=0,
        case_ids=["case_000", "case_001"],
        epochs_completed=2,
        final_metrics={"loss": 4.5, "positive_fraction": 0.25},
        versions={"torch": "x"},
    )
    values.update(overrides)
    return SSLCheckpointMeta(**values)


def make_state(seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "stages.0.conv.weight": torch.randn(4, 1, 3, 3, 3, generator=g),
        "stages.0.norm.bias": torch.randn(4, generator=g),
        "stages.1.conv.weight": torch.randn(8, 4, 3, 3, 3, generator=g, dtype=torch.float64),
        "stages.1.counter": torch.tensor(7),
    }


def files_in(folder):
    return sorted(os.listdir(folder))


# --- round trip ------------------------------------------------------------------------------------------------

def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    path = str(tmp_path / "checkpoint_final.pth")
    state, meta = make_state(), make_meta()
    save_encoder_checkpoint(path, state, meta)
    loaded_state, loaded_meta = load_encoder_checkpoint(path)
    assert list(loaded_state) == list(state)
    for key, value in state.items():
        assert loaded_state[key].dtype == value.dtype
        assert loaded_state[key].device.type == "cpu"
        assert torch.equal(loaded_state[key], value)
    assert loaded_meta == meta
    assert loaded_meta.to_dict() == meta.to_dict()
    assert loaded_meta.format_version == FORMAT_VERSION
    assert files_in(tmp_path) == ["checkpoint_final.pth"]  # no stray temp files


def test_file_layout_loads_with_weights_only(tmp_path):
    path = str(tmp_path / "checkpoint_final.pth")
    save_encoder_checkpoint(path, make_state(), make_meta())
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"format", "meta", "encoder_state_dict"}
    assert raw["format"] == FORMAT_NAME
    assert raw["meta"]["method"] == "pcl"
    assert raw["meta"]["format_version"] == FORMAT_VERSION


def test_saved_tensors_are_detached_cpu_copies(tmp_path):
    path = str(tmp_path / "c.pth")
    weight = torch.randn(3, 3, requires_grad=True)
    save_encoder_checkpoint(path, {"w": weight * 2}, make_meta())
    state, _ = load_encoder_checkpoint(path)
    assert not state["w"].requires_grad
    assert torch.equal(state["w"], (weight * 2).detach())


def test_numpy_float64_and_tuples_become_plain_json_types(tmp_path):
    path = str(tmp_path / "c.pth")
    meta = make_meta(final_metrics={"loss": np.float64(1.25)}, hparams={"scaling": (0.7, 1.3)})
    save_encoder_checkpoint(path, make_state(), meta)
    _, loaded = load_encoder_checkpoint(path)
    assert loaded.final_metrics == {"loss": 1.25}
    assert type(loaded.final_metrics["loss"]) is float
    assert loaded.hparams == {"scaling": [0.7, 1.3]}


@pytest.mark.parametrize("value,expected", [(np.float32(0.5), 0.5), (np.int64(3), 3)])
def test_other_numpy_scalars_become_plain_numbers(tmp_path, value, expected):
    path = str(tmp_path / "c.pth")
    save_encoder_checkpoint(path, make_state(), make_meta(final_metrics={"x": value}))
    _, loaded = load_encoder_checkpoint(path)
    assert loaded.final_metrics["x"] == expected
    assert type(loaded.final_metrics["x"]) is type(expected)


@pytest.mark.parametrize("bad", [object(), {1, 2}, torch.tensor(1.0), np.zeros(2)])
def test_non_json_metadata_raises_type_error_and_writes_nothing(tmp_path, bad):
    path = str(tmp_path / "c.pth")
    with pytest.raises(TypeError):
        save_encoder_checkpoint(path, make_state(), make_meta(hparams={"bad": bad}))
    assert files_in(tmp_path) == []


def test_from_dict_ignores_unknown_keys():
    data = make_meta().to_dict()
    data["added_in_a_later_version"] = 1
    assert SSLCheckpointMeta.from_dict(data) == make_meta()


def test_save_creates_missing_folders(tmp_path):
    path = str(tmp_path / "a" / "b" / "checkpoint_final.pth")
    save_encoder_checkpoint(path, make_state(), make_meta())
    assert os.path.isfile(path)
    assert files_in(tmp_path / "a" / "b") == ["checkpoint_final.pth"]


# --- atomic writes ---------------------------------------------------------------------------------------------

def test_overwrite_replaces_the_old_file(tmp_path):
    path = str(tmp_path / "checkpoint_final.pth")
    save_encoder_checkpoint(path, make_state(0), make_meta(epochs_completed=1))
    save_encoder_checkpoint(path, make_state(1), make_meta(epochs_completed=2))
    state, meta = load_encoder_checkpoint(path)
    assert meta.epochs_completed == 2
    assert torch.equal(state["stages.0.conv.weight"], make_state(1)["stages.0.conv.weight"])
    assert files_in(tmp_path) == ["checkpoint_final.pth"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_save_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch, error):
    path = str(tmp_path / "checkpoint_final.pth")
    save_encoder_checkpoint(path, make_state(0), make_meta(epochs_completed=1))
    before = open(path, "rb").read()
    real_save = torch.save
    seen = []

    def failing_save(obj, f, *args, **kwargs):
        seen.append(f)
        real_save(obj, f, *args, **kwargs)  # a partial/complete temp file exists when the error strikes
        with open(f, "r+b") as handle:
            handle.truncate(10)
        raise error

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(type(error)):
        save_encoder_checkpoint(path, make_state(1), make_meta(epochs_completed=2))
    monkeypatch.undo()
    assert len(seen) == 1 and os.path.dirname(seen[0]) == str(tmp_path)  # temp file in the same folder
    assert open(path, "rb").read() == before
    state, meta = load_encoder_checkpoint(path)
    assert meta.epochs_completed == 1
    assert torch.equal(state["stages.0.conv.weight"], make_state(0)["stages.0.conv.weight"])
    assert files_in(tmp_path) == ["checkpoint_final.pth"]


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    def failing_save(obj, f, *args, **kwargs):
        raise OSError("no space left")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        atomic_torch_save({"a": 1}, str(tmp_path / "x.pth"))
    assert files_in(tmp_path) == []


def test_atomic_torch_save_writes_through_a_temp_file(tmp_path, monkeypatch):
    path = str(tmp_path / "latest.pth")
    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        replaced.append((src, dst))
        assert not os.path.exists(dst)  # the final name appears only with the rename...
        assert torch.equal(torch.load(src, weights_only=True)["a"], torch.arange(3))  # ...of a complete file
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", spy_replace)
    atomic_torch_save({"a": torch.arange(3)}, path)
    assert len(replaced) == 1
    src, dst = replaced[0]
    assert dst == path and src != path and os.path.dirname(src) == str(tmp_path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))
    assert files_in(tmp_path) == ["latest.pth"]


# --- load errors -----------------------------------------------------------------------------------------------

def assert_user_error(excinfo, path):
    error = excinfo.value
    assert isinstance(error, SSLUserError)
    assert str(path) in error.problem
    assert isinstance(error.fix, str) and error.fix.strip()
    assert error.fix in str(error)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope" / "checkpoint_final.pth")
    with pytest.raises(SSLUserError) as excinfo:
        load_encoder_checkpoint(path)
    assert_user_error(excinfo, path)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(SSLUserError) as excinfo:
        load_encoder_checkpoint(str(tmp_path))
    assert_user_error(excinfo, tmp_path)


def test_truncated_file(tmp_path):
    path = str(tmp_path / "checkpoint_final.pth")
    save_encoder_checkpoint(path, make_state(), make_meta())
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    assert os.path.getsize(path) == size // 2
    with pytest.raises(SSLUserError) as excinfo:
        load_encoder_checkpoint(path)
    assert_user_error(excinfo, path)


def test_empty_and_garbage_files(tmp_path):
    for name, content in (("empty.pth", b""), ("garbage.pth", b"not a checkpoint at all" * 10)):
        path = str(tmp_path / name)
        with open(path, "wb") as f:
            f.write(content)
        with pytest.raises(SSLUserError) as excinfo:
            load_encoder_checkpoint(path)
        assert_user_error(excinfo, path)


@pytest.mark.parametrize("content", [{"a": 1}, [1, 2, 3], {"format": "something-else", "meta": {}}])
def test_not_our_format(tmp_path, content):
    path = str(tmp_path / "other.pth")
    torch.save(content, path)
    with pytest.raises(SSLUserError) as excinfo:
        load_encoder_checkpoint(path)
    assert_user_error(excinfo, path)
    assert FORMAT_NAME in excinfo.value.problem


def test_pickled_object_is_refused(tmp_path):
    # weights_only loading refuses arbitrary objects: also a clear user error
    path = str(tmp_path / "pickle.pth")
    torch.save({"format": FORMAT_NAME, "meta": make_meta(), "encoder_state_dict": {}}, path)
    with pytest.raises(SSLUserError) as excinfo:
        load_encoder_checkpoint(path)
    assert_user_error(excinfo, path)


def test_newer_format_version(tmp_path):
    path = str(tmp_path / "checkpoint_final.pth")
    save_encoder_checkpoint(path, make_state(), make_meta(format_version=FORMAT_VERSION + 1))
    with pytest.raises(SSLUserError) as excinfo:
        load_encoder_checkpoint(path)
    assert_user_error(excinfo, path)
    assert str(FORMAT_VERSION + 1) in excinfo.value.problem


def test_older_format_version_still_loads(tmp_path):
    path = str(tmp_path / "checkpoint_final.pth")
    meta = make_meta().to_dict()
    del meta["format_version"]  # a file from before the field existed counts as version 0
    torch.save({"format": FORMAT_NAME, "meta": meta, "encoder_state_dict": make_state()}, path)
    state, loaded = load_encoder_checkpoint(path)
    assert loaded.method == "pcl"
    assert set(state) == set(make_state())
