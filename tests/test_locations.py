"""Which pretraining a fine-tuning run loads: explicit, by method, or the only one; never a guess."""
import os

import pytest

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.locations import find_pretrained_checkpoint, pretraining_folder

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
    assert find_pretrained_checkpoint(DATASET, PLANS, CONFIG) == pcl

    simclr = _pretrain("simclr")
    with pytest.raises(SSLUserError) as ambiguous:
        find_pretrained_checkpoint(DATASET, PLANS, CONFIG)
    assert "ambiguous" in ambiguous.value.problem and "nnUNet_ssl_method" in ambiguous.value.fix
    assert find_pretrained_checkpoint(DATASET, PLANS, CONFIG, method="simclr") == simclr  # a pinned variant
    monkeypatch.setenv("nnUNet_ssl_method", "pcl")
    assert find_pretrained_checkpoint(DATASET, PLANS, CONFIG) == pcl
    with pytest.raises(SSLUserError, match="no finished 'gcl' pretraining"):
        find_pretrained_checkpoint(DATASET, PLANS, CONFIG, method="gcl")
    monkeypatch.setenv("nnUNet_ssl_weights", "/some/file.pth")
    assert find_pretrained_checkpoint(DATASET, PLANS, CONFIG) == "/some/file.pth"
