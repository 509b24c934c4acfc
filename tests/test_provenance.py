"""What a pretraining was trained on, compared with a fine-tuning's plans; the fold folder's record of the file."""
import hashlib
import os

import pytest

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.checkpoint import SSLCheckpointMeta
from nnunet_ssl.integration.provenance import (ALLOW_PLANS_CHANGE_ENV, RECORD, check_against_pretraining,
                                               compare_with_pretraining, file_sha256, read_record, record_problem,
                                               write_record)

ARCHITECTURE = {"network_class_name": "PlainConvUNet", "_kw_requires_import": [],
                "arch_kwargs": {"n_stages": 3, "nonlin": "torch.nn.LeakyReLU", "n_conv_per_stage_decoder": [1, 1]}}
TRAINED_ON = {"plans_identifier": "nnUNetPlans_cpu", "data_identifier": "nnUNetPlans_3d_fullres",
              "configuration": "3d_fullres", "num_input_channels": 1, "channel_names": {"0": "MRI"},
              "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
              "spacing": [1.0, 1.0, 1.0], "patch_size": [32, 32, 32], "architecture": ARCHITECTURE}


def meta(**changes) -> SSLCheckpointMeta:
    fields = {**TRAINED_ON, **changes}
    return SSLCheckpointMeta(method="pcl", hparams={}, dataset_name="Dataset987_Synthetic", architecture_hash="0",
                             seed=0, case_ids=["a"], epochs_completed=2, **fields)


def run(**changes) -> dict:
    return {**TRAINED_ON, **changes}


def test_the_same_plans_compare_equal_and_lists_equal_tuples_and_ints_equal_floats():
    comparison = compare_with_pretraining(meta().to_dict(), run(spacing=(1, 1, 1), patch_size=(32, 32, 32)))
    assert (comparison.refused, comparison.warned, comparison.unchecked) == ([], [], [])


def test_what_changes_the_meaning_of_features_is_refused_and_scale_only_warned():
    comparison = compare_with_pretraining(meta().to_dict(), run(
        normalization_schemes=["CTNormalization"], channel_names={"0": "CT"}, spacing=[2.0, 2.0, 2.0],
        data_identifier="nnUNetPlans_2mm_3d_fullres",
        architecture={**ARCHITECTURE, "arch_kwargs": {**ARCHITECTURE["arch_kwargs"], "nonlin": "torch.nn.ReLU",
                                                      "n_conv_per_stage_decoder": [2, 2]}}))
    assert comparison.refused == ["channel_names: {'0': 'MRI'} -> {'0': 'CT'}",
                                  "normalization_schemes: ['ZScoreNormalization'] -> ['CTNormalization']",
                                  "nonlin: 'torch.nn.LeakyReLU' -> 'torch.nn.ReLU'"]  # the decoder is not pretrained
    assert comparison.warned == ["spacing: [1.0, 1.0, 1.0] -> [2.0, 2.0, 2.0]",
                                 "data_identifier: 'nnUNetPlans_3d_fullres' -> 'nnUNetPlans_2mm_3d_fullres'"]
    assert comparison.unchecked == []


def test_channel_count_and_masked_normalisation_are_refused_patch_is_warned():
    comparison = compare_with_pretraining(meta().to_dict(), run(num_input_channels=2, use_mask_for_norm=[True],
                                                                patch_size=[48, 32, 32]))
    assert comparison.refused == ["num_input_channels: 1 -> 2", "use_mask_for_norm: [False] -> [True]"]
    assert comparison.warned == ["patch_size: [32, 32, 32] -> [48, 32, 32]"]


def test_an_older_checkpoint_says_what_it_does_not_record():
    old = meta(data_identifier=None, use_mask_for_norm=None, spacing=None, patch_size=None).to_dict()
    comparison = compare_with_pretraining(old, run(spacing=[2.0, 2.0, 2.0]))
    assert (comparison.refused, comparison.warned) == ([], [])
    assert comparison.unchecked == ["use_mask_for_norm", "spacing", "patch_size", "data_identifier"]
    lines = check_against_pretraining(meta(spacing=None), run(), "/x.pth", environ={})
    assert lines == ["    not checked, not recorded in this (older) checkpoint: spacing"]


def test_only_the_fields_given_are_compared():
    comparison = compare_with_pretraining(meta().to_dict(), {"architecture": ARCHITECTURE})
    assert (comparison.refused, comparison.warned, comparison.unchecked) == ([], [], [])


def test_a_refusal_names_every_field_with_both_values_and_the_override():
    with pytest.raises(SSLUserError) as error:
        check_against_pretraining(meta(), run(normalization_schemes=["CTNormalization"], num_input_channels=2),
                                  "/x.pth", environ={})
    assert "num_input_channels: 1 -> 2" in error.value.problem
    assert "normalization_schemes: ['ZScoreNormalization'] -> ['CTNormalization']" in error.value.problem
    assert f"export {ALLOW_PLANS_CHANGE_ENV}=1" in error.value.fix


@pytest.mark.parametrize("variable", [ALLOW_PLANS_CHANGE_ENV, "nnUNet_ssl_allow_architecture_change"])
def test_the_override_loads_with_a_warning_under_either_name(variable):
    lines = check_against_pretraining(meta(), run(normalization_schemes=["CTNormalization"]), "/x.pth",
                                      environ={variable: "1"})
    assert len(lines) == 1 and lines[0].startswith("WARNING: ") and "loaded anyway" in lines[0]
    assert lines[0].endswith("\n    normalization_schemes: ['ZScoreNormalization'] -> ['CTNormalization']")


def test_a_scale_difference_is_a_warning_without_any_override():
    lines = check_against_pretraining(meta(), run(spacing=[2.0, 2.0, 2.0]), "/x.pth", environ={})
    assert len(lines) == 1 and lines[0].startswith("WARNING: the pretrained encoder in /x.pth was trained at another "
                                                   "scale")
    assert lines[0].endswith("\n    spacing: [1.0, 1.0, 1.0] -> [2.0, 2.0, 2.0]")


def test_the_record_names_the_file_by_its_hash_and_notices_a_change(tmp_path):
    checkpoint = tmp_path / "checkpoint_final.pth"
    checkpoint.write_bytes(b"abc")
    assert file_sha256(str(checkpoint)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    fold = tmp_path / "fold_0"
    fold.mkdir()
    written = write_record(str(fold), str(checkpoint), "the trainer's pinned method", meta(), file_sha256(
        str(checkpoint)), "SSLInitTrainer_pcl_tiny")
    record = read_record(str(fold))
    assert record == written and os.listdir(fold) == [RECORD]
    assert (record["path"], record["method"], record["sha256"]) == (str(checkpoint), "pcl",
                                                                      hashlib.sha256(b"abc").hexdigest())
    assert record_problem(record) is None
    checkpoint.write_bytes(b"abd")
    assert record_problem(record).startswith(f"{checkpoint} has changed (sha256 now "
                                             f"{hashlib.sha256(b'abd').hexdigest()}")
    checkpoint.unlink()
    assert record_problem(record) == f"{checkpoint} is gone"
    assert read_record(str(tmp_path)) is None  # no record: a run started before records


def test_the_benchmark_does_not_pass_a_pretraining_choice_to_its_cells():
    from nnunet_ssl.benchmark.run import cell_environment
    env, removed = cell_environment({"PATH": "/bin", "nnUNet_ssl_weights": "/w.pth", "nnUNet_ssl_method": "pcl",
                                     "nnUNet_ssl_allow_unhealthy": "1"})
    assert env == {"PATH": "/bin", "nnUNet_ssl_allow_unhealthy": "1"}
    assert removed == ["nnUNet_ssl_weights", "nnUNet_ssl_method"]
    assert cell_environment({"PATH": "/bin"}) == ({"PATH": "/bin"}, [])
