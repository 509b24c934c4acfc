"""End to end through the real commands on a tiny synthetic dataset (CPU, a few minutes):
nnUNetv2_plan_and_preprocess -> nnUNetv2_ssl_plan_cpu -> nnUNetv2_ssl_pretrain ->
nnUNetv2_train -tr SSLInitTrainer_tiny -> nnUNetv2_predict, plus SSLInitTrainer's loading in-process."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import DATASET_ID, PLANS, run_command, script

pytestmark = pytest.mark.slow

def test_pretraining_writes_checkpoint_with_metadata_and_progress(pretrained):
    from nnunet_ssl.integration.checkpoint import load_encoder_checkpoint
    state, meta = load_encoder_checkpoint(os.path.join(pretrained["folder"], "checkpoint_final.pth"))
    assert meta.method == "pcl" and meta.plans_identifier == PLANS and meta.configuration == "3d_fullres"
    assert meta.dataset_name == pretrained["name"] and len(meta.case_ids) == 8
    assert meta.epochs_completed == 2 and meta.channel_names == {"0": "MRI"}
    assert meta.normalization_schemes == ["ZScoreNormalization"] and len(meta.architecture_hash) == 64
    assert meta.hparams["method"]["temperature"] == 0.1 and meta.hparams["schedule"]["batch_size"] == 4
    assert 0 < meta.hparams["derived"]["effective_theta"] < 0.1
    assert set(meta.versions) >= {"nnunetv2", "torch", "nnunet-ssl"}
    assert all(k.startswith("stages.") for k in state)  # encoder only, no decoder.encoder alias
    assert os.path.isfile(os.path.join(pretrained["folder"], "progress.png"))
    history = json.load(open(os.path.join(pretrained["folder"], "progress.json")))
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0 < h["positive_fraction"] < 1 and np.isfinite(h["loss"]) for h in history)
    assert all(0 < h["stage0_redundancy"] <= 1 for h in history)  # one encoder forward per epoch
    assert meta.final_metrics["stage0_redundancy"] == history[-1]["stage0_redundancy"]
    assert "epoch 2, loss" in pretrained["pretrain_output"]


def test_resume_of_a_finished_run_changes_nothing(pretrained):
    final = os.path.join(pretrained["folder"], "checkpoint_final.pth")
    before = os.path.getmtime(final)
    out = run_command([script("nnUNetv2_ssl_pretrain"), "-d", str(DATASET_ID), "-p", PLANS, "-device", "cpu",
                       "--epochs", "2", "--iterations-per-epoch", "3", "--batch-size", "4", "--c"])
    assert "already finished" in out.stdout and os.path.getmtime(final) == before


def _trainer(trainer_class):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    folder = os.path.join(str(nnUNet_preprocessed), f"Dataset{DATASET_ID}_Synthetic")
    plans = {**load_json(os.path.join(folder, f"{PLANS}.json")), "continue_training": False}  # nnunetv2 2.8 pops it
    return trainer_class(plans, "3d_fullres", 0, load_json(os.path.join(folder, "dataset.json")), torch.device("cpu"))


def test_ssl_init_trainer_loads_encoder_and_leaves_decoder_random(pretrained, monkeypatch):
    from nnunet_ssl.blocks.health import weight_scale_ratios
    from nnunet_ssl.integration.checkpoint import load_encoder_checkpoint
    from nnunet_ssl.integration.trainers import SSLInitTrainer_tiny, SSLScratchTrainer_tiny
    saved, _ = load_encoder_checkpoint(os.path.join(pretrained["folder"], "checkpoint_final.pth"))
    trainer = _trainer(SSLInitTrainer_tiny)  # the default: convs rescaled to He std, reported in the log
    trainer.initialize()
    assert all(r == pytest.approx(1.0, rel=1e-4) for r in weight_scale_ratios(trainer.network.encoder).values())
    monkeypatch.setenv("nnUNet_ssl_keep_weight_scale", "1")  # below: the exact pretrained tensors
    networks = {}
    for cls in (SSLInitTrainer_tiny, SSLScratchTrainer_tiny):
        torch.manual_seed(0)  # same random init for both: only the pretrained encoder may differ
        trainer = _trainer(cls)
        trainer.initialize()
        networks[cls.__name__] = trainer.network.state_dict()
    init, scratch = networks["SSLInitTrainer_tiny"], networks["SSLScratchTrainer_tiny"]
    for key, value in saved.items():
        assert torch.equal(init[f"encoder.{key}"], value)
        assert torch.equal(init[f"decoder.encoder.{key}"], value)  # the alias sees the same tensors
    assert any(not torch.equal(init[f"encoder.{k}"], scratch[f"encoder.{k}"]) for k in saved)
    decoder_keys = [k for k in init if k.startswith("decoder.") and not k.startswith("decoder.encoder.")]
    assert decoder_keys and all(torch.equal(init[k], scratch[k]) for k in decoder_keys)


@pytest.mark.parametrize("name,scales", [("SSLScratchTrainer_tiny", (1.0, 1.0)),
                                         ("SSLInitTrainer_decoderFirst_tiny", (0.0, 1.0)),
                                         ("SSLInitTrainer_lowEncoderLR_tiny", (0.1, 0.1))])
def test_encoder_learning_rate_of_the_variants(pretrained, name, scales):
    import nnunet_ssl.integration.trainers as trainers
    trainer = _trainer(getattr(trainers, name))
    trainer.initialize()
    encoder_params = {id(p) for p in trainer.network.encoder.parameters()}
    assert {id(p) for p in trainer.optimizer.param_groups[1]["params"]} == encoder_params
    assert not encoder_params & {id(p) for p in trainer.optimizer.param_groups[0]["params"]}
    for epoch, scale in enumerate(scales):  # warm-up lasts 1 epoch in the _tiny variants
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()
        base = trainer.optimizer.param_groups[0]["lr"]
        assert base > 0 and trainer.optimizer.param_groups[1]["lr"] == pytest.approx(scale * base)


def _scheduled_lrs(trainer, epochs: int) -> list[float]:
    lrs = []
    for epoch in range(epochs):
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    return lrs


def test_matched_schedule_is_nnunets_poly_and_linear_warmup_is_a_recipe(pretrained):
    import nnunet_ssl.integration.trainers as trainers
    stock = _trainer(trainers.nnUNetTrainer_cpu500it)
    stock.initialize()
    expected = [0.01 * (1 - e / 20) ** 0.9 for e in range(20)]  # nnU-Net's PolyLRScheduler over 20 epochs
    assert _scheduled_lrs(stock, 20) == pytest.approx(expected)
    for name in ("SSLScratchTrainer_cpu500it", "SSLInitTrainer_cpu500it"):
        matched = _trainer(getattr(trainers, name))
        matched.initialize()
        assert _scheduled_lrs(matched, 20) == pytest.approx(expected), name
    warm = _trainer(trainers.SSLScratchTrainer_linearWarmup_cpu500it)  # 1 warm-up epoch of 20 at cpu500it
    warm.initialize()
    lrs = _scheduled_lrs(warm, 20)
    assert lrs[0] == pytest.approx(0.01) and lrs[1:] == pytest.approx([0.01 * (1 - e / 19) ** 0.9 for e in range(19)])


def test_matched_scratch_takes_the_same_steps_as_stock_nnunet(pretrained):
    """Matched scratch differs from nnUNetTrainer only in the encoder's own optimizer group (same lr and
    weight decay): from the same init and on the same batches its weights must follow stock's."""
    import nnunet_ssl.integration.trainers as trainers
    weights = {}
    for cls in (trainers.nnUNetTrainer_cpu500it, trainers.SSLScratchTrainer_cpu500it):
        torch.manual_seed(0)
        trainer = _trainer(cls)
        trainer.initialize()
        init = {k: v.clone() for k, v in trainer.network.state_dict().items()}
        trainer.current_epoch = 0
        trainer.on_train_epoch_start()
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            data = torch.randn((2, 1, *trainer.configuration_manager.patch_size), generator=generator)
            with torch.no_grad():
                shapes = [o.shape[2:] for o in trainer.network(data)]
            segmentation = torch.randint(0, 2, data.shape, generator=generator).float()
            target = [torch.nn.functional.interpolate(segmentation, size=s, mode="nearest") for s in shapes]
            trainer.train_step({"data": data, "target": target})
        weights[cls.__name__] = trainer.network.state_dict()
    stock, matched = weights["nnUNetTrainer_cpu500it"], weights["SSLScratchTrainer_cpu500it"]
    assert stock.keys() == matched.keys()
    assert any(not torch.allclose(init[k], matched[k], atol=1e-4) for k in matched)  # the steps moved them
    assert all(torch.allclose(stock[k], matched[k], atol=1e-6) for k in stock)


def test_cpu_trainers_honour_omp_num_threads(pretrained, monkeypatch):
    from nnunet_ssl.integration.trainers import SSLScratchTrainer_tiny
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # what nnUNetv2_train -device cpu sets on this machine
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        _trainer(SSLScratchTrainer_tiny)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.delenv("OMP_NUM_THREADS")
        _trainer(SSLScratchTrainer_tiny)
        assert torch.get_num_threads() == 2  # unset: nnU-Net's choice stands
    finally:
        torch.set_num_threads(threads)


def test_throughput_measures_both_steps_on_one_patch_and_leaves_no_results(pretrained):
    from nnunetv2.paths import nnUNet_results

    from nnunet_ssl.benchmark.throughput import throughput
    results = os.path.join(str(nnUNet_results), f"Dataset{DATASET_ID}_Synthetic")
    before = sorted(os.listdir(results))
    (row,) = throughput(str(DATASET_ID), ["pcl"], torch.device("cpu"), plans=PLANS, batch_size=2, iterations=2)
    assert sorted(os.listdir(results)) == before  # nnUNetTrainer's output folder went to a scratch folder
    assert row["pretraining_samples_per_s"] > 0 and row["supervised_samples_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["pretraining_samples_per_s"] / row["supervised_samples_per_s"], rel=0.01)
    with open(os.path.join(pretrained["folder"], "checkpoint_final.json")) as f:
        assert row["patch_size"] == json.load(f)["hparams"]["derived"]["patch_size"]  # PCL's own patch


def test_stock_train_and_predict_with_ssl_init_trainer(pretrained, tmp_path):
    env_clean = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}  # discovery must do it
    import subprocess
    train = subprocess.run([script("nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "0", "-p", PLANS,
                            "-tr", "SSLInitTrainer_tiny", "-device", "cpu"], env=env_clean,
                           capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    model = os.path.join(pretrained["env"]["nnUNet_results"], pretrained["name"],
                         f"SSLInitTrainer_tiny__{PLANS}__3d_fullres")
    log = "".join(open(os.path.join(model, "fold_0", f)).read()
                  for f in os.listdir(os.path.join(model, "fold_0")) if f.startswith("training_log"))
    assert "loaded pretrained encoder (" in log and "checkpoint_final.pth" in log
    assert os.path.isfile(os.path.join(model, "fold_0", "checkpoint_final.pth"))

    images = tmp_path / "in"
    images.mkdir()
    raw = os.path.join(pretrained["env"]["nnUNet_raw"], pretrained["name"], "imagesTr")
    for case in ("case_000_0000.nii.gz", "case_001_0000.nii.gz"):
        os.symlink(os.path.join(raw, case), images / case)
    predict = subprocess.run([script("nnUNetv2_predict"), "-i", str(images), "-o", str(tmp_path / "out"),
                              "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "-p", PLANS,
                              "-tr", "SSLInitTrainer_tiny", "-device", "cpu", "--disable_tta"],
                             env=env_clean, capture_output=True, text=True, timeout=900)
    assert predict.returncode == 0, predict.stdout[-3000:] + predict.stderr[-3000:]
    for case in ("case_000", "case_001"):
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{case}.nii.gz")))
        image = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(raw, f"{case}_0000.nii.gz")))
        assert seg.shape == image.shape and set(np.unique(seg)) <= {0, 1}

    # export for stock nnU-Net: same predictions from nnUNetTrainer, which needs no plugin
    exported = tmp_path / "exported_results"
    run_command([script("nnUNetv2_ssl_export"), "-d", str(DATASET_ID), "-tr", "SSLInitTrainer_tiny", "-p", PLANS,
                 "-o", str(exported)])
    model = exported / pretrained["name"] / f"nnUNetTrainer__{PLANS}__3d_fullres"
    assert torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=False)["trainer_name"] == "nnUNetTrainer"
    stock = subprocess.run([script("nnUNetv2_predict"), "-i", str(images), "-o", str(tmp_path / "out_stock"),
                            "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "-p", PLANS,
                            "-tr", "nnUNetTrainer", "-device", "cpu", "--disable_tta"],
                           env={**env_clean, "nnUNet_results": str(exported)}, capture_output=True, text=True,
                           timeout=900)
    assert stock.returncode == 0, stock.stdout[-3000:] + stock.stderr[-3000:]
    for case in ("case_000", "case_001"):
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{case}.nii.gz")))
        theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out_stock" / f"{case}.nii.gz")))
        assert np.array_equal(ours, theirs)


def test_health_probe_compares_init_and_checkpoint_on_the_same_batches(pretrained):
    from nnunet_ssl.integration.health_probe import format_table, probe
    weights = os.path.join(pretrained["folder"], "checkpoint_final.pth")
    result = probe(str(DATASET_ID), "pcl", "3d_fullres", PLANS, weights, batches=2, batch_size=4)
    assert set(result) == {"init", "checkpoint", "pretraining_log"}
    for row in (result["init"], result["checkpoint"]):
        assert row["readout"] == "multiscale" and row["loss_collapse"] == pytest.approx(0.1 / 0.07 * np.log(7))
        assert 0 < row["positive_fraction"] < 1 and row["top1_chance"] == row["positive_fraction"]
        assert 0 <= row["feature_spread"] and np.isfinite(row["loss_ratio"])
    assert result["init"]["positive_fraction"] == result["checkpoint"]["positive_fraction"]  # the same batches
    assert result["init"]["conv_std_over_he_median"] == pytest.approx(1.0, abs=0.1)  # He init
    stages = len(result["init"]["stage_redundancy"])
    assert stages >= 3 and len(result["checkpoint"]["stage_redundancy"]) == stages
    assert 0 < result["init"]["stage0_redundancy"] < 0.5  # He init: the first stage's channels differ
    log = result["pretraining_log"]
    assert log["verdict"] in ("learned", "no_learning") and log["epoch"] == 2
    assert "pretraining_log" in format_table(result)
