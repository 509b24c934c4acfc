"""Reconstruction pretraining through the real command on the tiny synthetic dataset, then full-network
loading in nnU-Net's trainer. Pretraining results go to a folder of their own, so that the PCL
pretraining of the shared fixture stays the only one the unpinned SSLInitTrainer tests see."""
import json
import os

import pytest
import torch
from conftest import DATASET_ID, PLANS, script
from test_e2e import _trainer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mae(pretrained, tmp_path_factory):
    """MAE pretrained for 3 x 10 iterations (previews every epoch); yields its folder."""
    results = str(tmp_path_factory.mktemp("mae_results"))
    env = {**os.environ, "nnUNet_results": results}
    import subprocess
    out = subprocess.run([script("nnUNetv2_ssl_pretrain"), "-d", str(DATASET_ID), "-p", PLANS, "-device", "cpu",
                          "-m", "mae", "--epochs", "3", "--iterations-per-epoch", "10", "--batch-size", "4",
                          "--set", "preview_every=1"], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return os.path.join(results, pretrained["name"], f"SSLPretrain_mae__{PLANS}__3d_fullres")


def test_mae_checkpoint_holds_the_decoder_and_the_run_shows_previews(mae):
    checkpoint = torch.load(os.path.join(mae, "checkpoint_final.pth"), weights_only=True)
    decoder = checkpoint["decoder_state_dict"]
    assert any(k.startswith("stages.") for k in decoder) and any(k.startswith("transpconvs.") for k in decoder)
    assert not any(k.startswith(("encoder.", "seg_layers.")) for k in decoder)
    meta = checkpoint["meta"]
    assert meta["method"] == "mae" and meta["hparams"]["method"]["mask_ratio"] == 0.75
    assert meta["hparams"]["schedule"]["initial_lr"] == 0.01  # nnU-Net's optimiser, the method's default
    assert sorted(os.listdir(os.path.join(mae, "previews"))) == [f"epoch_000{i}.png" for i in (1, 2, 3)]
    assert os.path.isfile(os.path.join(mae, "progress.png"))


def test_mae_masked_loss_falls_below_predicting_zeros(mae):
    history = json.load(open(os.path.join(mae, "progress.json")))
    first, last = history[0], history[-1]
    # measured: 1.10 -> 0.80 against 0.95 for predicting 0 (the mean intensity) in 30 iterations; the noisy
    # synthetic images learn slowly, tests/test_mae.py checks the margin on learnable data (ratio ~0.3)
    assert last["loss"] < first["loss"] and last["loss"] < 0.95 * last["loss_predict_zero"], history
    assert last["masked_fraction"] == pytest.approx(0.75, abs=0.02)


def test_full_network_trainer_loads_the_decoder_and_plain_trainer_does_not(mae, monkeypatch):
    from nnunet_ssl.integration.trainers import SSLInitTrainer_fullNetwork_tiny, SSLInitTrainer_tiny
    monkeypatch.setenv("nnUNet_ssl_weights", os.path.join(mae, "checkpoint_final.pth"))
    saved = torch.load(os.path.join(mae, "checkpoint_final.pth"), weights_only=True)["decoder_state_dict"]
    networks = {}
    for cls in (SSLInitTrainer_fullNetwork_tiny, SSLInitTrainer_tiny):
        torch.manual_seed(0)
        trainer = _trainer(cls)
        trainer.initialize()
        networks[cls] = trainer.network.state_dict()
    full, encoder_only = networks[SSLInitTrainer_fullNetwork_tiny], networks[SSLInitTrainer_tiny]
    for key, value in saved.items():
        assert torch.equal(full[f"decoder.{key}"], value), key
    assert any(not torch.equal(encoder_only[f"decoder.{k}"], v) for k, v in saved.items())
    seg = [k for k in full if k.startswith("decoder.seg_layers.")]
    assert seg and all(torch.equal(full[k], encoder_only[k]) for k in seg)  # random, the same seed


def test_models_genesis_runs_through_the_command(pretrained, tmp_path):
    env = {**os.environ, "nnUNet_results": str(tmp_path)}
    import subprocess
    out = subprocess.run([script("nnUNetv2_ssl_pretrain"), "-d", str(DATASET_ID), "-p", PLANS, "-device", "cpu",
                          "-m", "models_genesis", "--epochs", "1", "--iterations-per-epoch", "2", "--batch-size", "2"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    folder = tmp_path / pretrained["name"] / f"SSLPretrain_models_genesis__{PLANS}__3d_fullres"
    history = json.load(open(folder / "progress.json"))
    last = history[-1]
    assert last["loss"] > 0 and last["loss_return_input"] > 0 and last["loss_predict_zero"] > 0
    assert (folder / "previews" / "epoch_0001.png").is_file()
    assert "decoder_state_dict" in torch.load(folder / "checkpoint_final.pth", weights_only=True)
