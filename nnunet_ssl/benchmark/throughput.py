"""Pretraining throughput against nnU-Net's own supervised training step, in one run.

Both sides use the network the plans define, the same patch and the same batch size, and count the
whole step as a user sees it: data loading and augmentation (nnU-Net's data loader / the method's
sampler), forward, backward and optimizer step. A pretraining *sample* is one case drawn for a step
(PCL: one patch seen as 2 views; MLSSCL: 4 clips through the online branch and 3 through the target;
MAE, Models Genesis: one patch through the whole network, as in the supervised step; MoCo: 2 views, one
through each branch; BYOL: 2 views through both branches),
so the two numbers answer "how long does pretraining take per case-visit compared with training".

    nnUNetv2_ssl_throughput -d 501 -p nnUNetPlans_cpu -device cpu -m pcl mlsscl

The patch defaults to the method's pretraining patch (PCL shortens the plans' patch along its
position axis); nnU-Net is given that same patch through an in-memory copy of the plans.
"""
import contextlib
import copy
import json
import os
import tempfile
import time

import torch

from nnunet_ssl.errors import SSLUserError


@contextlib.contextmanager
def _results_root(folder: str):
    """nnUNetTrainer creates its output folder under nnUNet_results on construction (nnunetv2 >= 2.8 reads
    the variable when used); point it at a scratch folder so that a measurement leaves nothing behind."""
    saved = os.environ.get("nnUNet_results")
    os.environ["nnUNet_results"] = folder
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("nnUNet_results")
        else:
            os.environ["nnUNet_results"] = saved


def supervised_samples_per_s(data, patch_size: list[int], batch_size: int, iterations: int, warmup: int,
                             device: torch.device, scratch: str) -> float:
    """Samples/s of stock nnUNetTrainer.train_step, data loading included, for one patch and batch."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    plans = copy.deepcopy(data.plans_manager.plans)
    plans["configurations"][data.configuration_name].update(patch_size=list(patch_size), batch_size=batch_size)
    plans["continue_training"] = False  # nnunetv2 2.8's constructor pops it
    with _results_root(scratch), open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        trainer = nnUNetTrainer(plans, data.configuration_name, 0, data.dataset_json, device)
        # its do_split would write nnU-Net's splits_final.json into the user's dataset when there is none
        trainer.preprocessed_dataset_folder_base = scratch
        trainer.initialize()
        loader, _ = trainer.get_dataloaders()
    trainer.network.train()
    for _ in range(warmup):
        trainer.train_step(next(loader))
    start = time.perf_counter()
    for _ in range(iterations):
        trainer.train_step(next(loader))
    seconds = time.perf_counter() - start
    if hasattr(loader, "_finish"):
        loader._finish()
    return iterations * batch_size / seconds


def pretraining_step(data, method: str, patch_size: list[int] | None, batch_size: int, iterations: int,
                     device: torch.device, scratch: str) -> tuple[float, list[int]]:
    """Samples/s of the pretraining loop (the second of two epochs, so start-up is excluded) and the
    patch the method trained on."""
    from nnunet_ssl.integration.pretrainer import Pretrainer, PretrainSchedule

    schedule = PretrainSchedule(num_epochs=2, iterations_per_epoch=iterations, batch_size=batch_size,
                                patch_size=tuple(patch_size) if patch_size else None)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        pretrainer = Pretrainer(data, method, {}, schedule, device, os.path.join(scratch, method))
        pretrainer.run()
    derived = pretrainer.method.derived_values()
    patch = derived.get("patch_size") or derived.get("clip_shape")
    return pretrainer.log.history[-1]["samples_per_s"], [int(s) for s in patch]


def throughput(dataset: str, methods: list[str], torch_device: torch.device, configuration: str = "3d_fullres",
               plans: str = "nnUNetPlans", batch_size: int | None = None, patch_size: list[int] | None = None,
               iterations: int = 20, warmup: int = 5) -> list[dict]:
    """One row per method: pretraining and supervised samples/s on the same patch and batch, and their ratio."""
    from nnunet_ssl.integration.dataset import open_preprocessed
    from nnunet_ssl.methods import require_methods

    require_methods(methods)
    if iterations < 1 or warmup < 0:
        raise SSLUserError(f"need at least 1 timed iteration and no negative warm-up, got {iterations} and {warmup}.",
                           "e.g. --iterations 20")
    if torch_device.type == "cpu":
        torch.set_flush_denormal(True)  # as both loops do on CPU
    data = open_preprocessed(dataset, configuration, plans)
    batch = batch_size or data.configuration.batch_size
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for method in methods:
            pretrain_rate, patch = pretraining_step(data, method, patch_size, batch, iterations, torch_device,
                                                    scratch)
            supervised_rate = supervised_samples_per_s(data, patch, batch, iterations, warmup, torch_device, scratch)
            rows.append({"method": method, "patch_size": patch, "batch_size": batch, "device": str(torch_device),
                         "threads": torch.get_num_threads(), "pretraining_samples_per_s": round(pretrain_rate, 2),
                         "supervised_samples_per_s": round(supervised_rate, 2),
                         "ratio": round(pretrain_rate / supervised_rate, 3)})
            print(json.dumps(rows[-1]))
    return rows
