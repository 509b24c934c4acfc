"""Which pretraining a fine-tuning run loads: explicit, by method, or the only one; never a guess."""
import os

import pytest

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.locations import check_pinned_method, find_pretrained_checkpoint, pretraining_folder

DATASET, PLANS, CONFIG = "Dataset123_X", "nnUNetPlans", "3d_fullres"


def _pretrain(method: str) -> str:
    folder = pretraining_folder(DATASET, method, PLANS, CONFIG)
    os.makedirs(folder)
    path = os.path.join(folder, "checkpoint_final.pth")
    open(path, "w").close()
    return path


def test_choice_of_pretraining(nnunet_env, monkeypatch):
    monkeypatch.delenv("nnUNet_ssl_method", raising=False)
    monkeypatch.delenv("nnUNet_ssl_weights", raising=False)
    with pytest.raises(SSLUserError) as none:
        find_pretrained_checkpoint(DATASET, PLANS, CONFIG)
    assert "nnUNetv2_ssl_pretrain -d Dataset123_X -c 3d_fullres -p nnUNetPlans" in none.value.fix

    pcl = _pretrain("pcl")
    os.makedirs(pretraining_folder(DATASET, "gcl", PLANS, CONFIG))  # unfinished: not a candidate
    assert find_pretrained_checkpoint(DATASET, PLANS, CONFIG)[0] == pcl

    simclr = _pretrain("simclr")
    with pytest.raises(SSLUserError) as ambiguous:
        find_pretrained_checkpoint(DATASET, PLANS, CONFIG)
    assert "ambiguous" in ambiguous.value.problem and "nnUNet_ssl_method" in ambiguous.value.fix
    assert find_pretrained_checkpoint(DATASET, PLANS, CONFIG, method="simclr") == (
        simclr, "the trainer's pinned method")
    with pytest.raises(SSLUserError, match="no finished 'gcl' pretraining"):
        find_pretrained_checkpoint(DATASET, PLANS, CONFIG, method="gcl")
    monkeypatch.setenv("nnUNet_ssl_method", "pcl")
    assert find_pretrained_checkpoint(DATASET, PLANS, CONFIG) == (pcl, "nnUNet_ssl_method=pcl")
    assert find_pretrained_checkpoint(DATASET, PLANS, CONFIG, method="pcl")[0] == pcl  # the same method: no conflict
    monkeypatch.setenv("nnUNet_ssl_weights", "/some/file.pth")
    assert find_pretrained_checkpoint(DATASET, PLANS, CONFIG) == ("/some/file.pth", "nnUNet_ssl_weights")


def test_a_pinned_method_is_never_overridden(nnunet_env, monkeypatch):
    monkeypatch.delenv("nnUNet_ssl_weights", raising=False)
    _pretrain("pcl"), _pretrain("simclr")
    monkeypatch.setenv("nnUNet_ssl_method", "pcl")
    with pytest.raises(SSLUserError) as conflict:
        find_pretrained_checkpoint(DATASET, PLANS, CONFIG, method="simclr")
    assert "pinned to the 'simclr' pretraining, and nnUNet_ssl_method=pcl" in conflict.value.problem
    # nnUNet_ssl_weights names the file; whether it may is decided on its metadata
    monkeypatch.delenv("nnUNet_ssl_method")
    monkeypatch.setenv("nnUNet_ssl_weights", "/some/pcl.pth")
    assert find_pretrained_checkpoint(DATASET, PLANS, CONFIG, method="simclr") == ("/some/pcl.pth",
                                                                                  "nnUNet_ssl_weights")
    check_pinned_method("simclr", "simclr", "/some/pcl.pth", "nnUNet_ssl_weights")  # the pinned method: allowed
    check_pinned_method(None, "pcl", "/some/pcl.pth", "nnUNet_ssl_weights")  # nothing pinned
    with pytest.raises(SSLUserError) as other:
        check_pinned_method("simclr", "pcl", "/some/pcl.pth", "nnUNet_ssl_weights")
    assert other.value.problem == ("this trainer is pinned to the 'simclr' pretraining, and "
                                   "nnUNet_ssl_weights=/some/pcl.pth holds a 'pcl' pretraining.")
    assert "unset nnUNet_ssl_weights" in other.value.fix
