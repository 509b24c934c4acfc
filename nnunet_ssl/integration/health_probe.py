"""Label-free health probe: what a method's readout and loss see on real preprocessed data, at random
init and for a pretrained checkpoint, on the same batches (nnUNetv2_ssl_health).

Per setting it runs the method's own training step without gradients over a few batches and reports
the mean of: the across-sample spread of the pooled readout vector (blocks.health.feature_spread), the
loss against its collapse value, the positive fraction, top-1 retrieval against chance (on the
projected embeddings and, for PCL-family methods and BYOL, on the readout features without any head) and the
encoder's conv weight std against nnU-Net's He init, and how redundant each encoder stage's channels are
(blocks.health.stage_redundancy: after a short pretraining the first stage's channels carried almost one
signal, and fine-tuning started its classes late; docs/methods/readouts.md). A checkpoint stores no head,
so its loss is measured with a fresh head (a momentum target restarts from the loaded encoder); the loss the
pretraining reached is read from its own log (progress.json) and the verdict from its metadata.
"""
import contextlib
import json
import os
import tempfile

import numpy as np
import torch
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

from nnunet_ssl.blocks.health import stage_redundancy, weight_scale_ratios
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.checkpoint import load_encoder_checkpoint
from nnunet_ssl.integration.encoder_loader import strip_wrapper_prefixes

REPORTED = ("feature_spread", "loss", "loss_collapse", "positive_fraction", "top1_retrieval",
            "top1_feature_retrieval", "top1_chance")


def _measure(method, cases, case_ids: list[str], batch_size: int, batches: int, seed: int) -> dict:
    np.random.seed(seed)  # the sampler draws with numpy: the same batches for every setting
    torch.manual_seed(seed)
    loader = SingleThreadedAugmenter(method.make_sampler(cases, case_ids, batch_size), None)
    sums: dict[str, float] = {}
    redundancy: list[list[float]] = []
    device = next(method.encoder.parameters()).device
    method.train()  # the heads' BatchNorm as in pretraining (batch statistics)
    with torch.no_grad():
        for _ in range(batches):
            batch = next(loader)
            images = method.encoder_images(batch)
            if images is not None:
                redundancy.append(stage_redundancy(method.encoder, torch.as_tensor(images).float().to(device)))
            _, metrics = method.training_step(batch)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
    means = {k: v / batches for k, v in sums.items()}
    row = {k: means[k] for k in REPORTED if k in means}
    if redundancy:
        row["stage_redundancy"] = [float(np.mean(stage)) for stage in zip(*redundancy)]
        row["stage0_redundancy"] = row["stage_redundancy"][0]
    if "loss" in row and "loss_collapse" in row:
        row["loss_ratio"] = row["loss"] / row["loss_collapse"]
    ratios = sorted(weight_scale_ratios(method.encoder).values())
    row["conv_std_over_he_median"] = ratios[len(ratios) // 2]
    row["conv_std_over_he_max"] = ratios[-1]
    return row


def _pretraining_log(checkpoint: str, meta) -> dict:
    """The last epoch of the pretraining's own log, and the verdict its checkpoint records."""
    health = meta.health or {}
    row = {"verdict": health.get("verdict", "none for this method" if health  # reconstruction: no collapse value
                                 else "not recorded (checkpoint older than issue 10)")}
    progress = os.path.join(os.path.dirname(checkpoint), "progress.json")
    if os.path.isfile(progress):
        with open(progress) as f:
            last = json.load(f)[-1]
        row.update({k: last[k] for k in (*REPORTED, "epoch") if k in last})
        if "loss" in last and "loss_collapse" in last:
            row["loss_ratio"] = last["loss"] / last["loss_collapse"]
    return row


def probe(dataset: str, method_name: str, configuration: str = "3d_fullres", plans: str = "nnUNetPlans",
          checkpoint: str | None = None, method_overrides: dict | None = None, batches: int = 8,
          batch_size: int | None = None, patch_size: list[int] | None = None,
          device: torch.device = torch.device("cpu"), seed: int = 0) -> dict:
    """{"init": row, "checkpoint": row, "pretraining_log": row} (the last two with ``checkpoint``)."""
    from nnunet_ssl.integration.dataset import open_preprocessed
    from nnunet_ssl.integration.pretrainer import Pretrainer, PretrainSchedule
    from nnunet_ssl.methods import get_method, require_methods

    require_methods([method_name])
    if batches < 1:
        raise SSLUserError(f"need at least 1 batch, got {batches}.", "e.g. --batches 8")
    method_config, state, meta = {}, None, None
    if checkpoint:
        state, meta = load_encoder_checkpoint(checkpoint)
        if meta.method != method_name:
            raise SSLUserError(f"{checkpoint} was pretrained with {meta.method!r}, not {method_name!r}.",
                               f"pass -m {meta.method}")
        # the readout and the patch the checkpoint was trained with, unless overridden
        method_config = dict(meta.hparams.get("method", {}))
        patch_size = patch_size or meta.hparams.get("schedule", {}).get("patch_size")
    method_config.update(method_overrides or {})
    # the options check themselves when built: a bad one is refused before the data is opened
    get_method(method_name).config_class.from_dict(method_config)
    schedule = PretrainSchedule(batch_size=batch_size or 16, seed=seed,
                                patch_size=tuple(patch_size) if patch_size else None)
    data = open_preprocessed(dataset, configuration, plans)
    result = {}
    with tempfile.TemporaryDirectory() as scratch:
        for setting in ("init", "checkpoint") if checkpoint else ("init",):
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                pretrainer = Pretrainer(data, method_name, method_config, schedule, device, scratch)
            method = pretrainer.method
            if setting == "checkpoint":
                method.encoder.load_state_dict(strip_wrapper_prefixes(state), strict=True)
                method.encoder_loaded()  # a momentum target starts from the loaded encoder, not from random init
            result[setting] = _measure(method, pretrainer.cases, data.case_ids, schedule.batch_size, batches, seed)
            result[setting]["readout"] = method.readout.kind
    if checkpoint:
        result["pretraining_log"] = _pretraining_log(checkpoint, meta)
    return result


def format_table(result: dict) -> str:
    columns = ["readout", *REPORTED, "loss_ratio", "conv_std_over_he_median", "conv_std_over_he_max",
               "stage0_redundancy", "verdict"]
    columns = [c for c in columns if any(c in row for row in result.values())]
    lines = ["setting          " + "  ".join(f"{c:>12.12}" for c in columns)]
    for name, row in result.items():
        cells = [f"{row[c]:12.4f}" if isinstance(row.get(c), float) else f"{str(row.get(c, '-')):>12.12}"
                 for c in columns]
        lines.append(f"{name:<16} " + "  ".join(cells))
    return "\n".join(lines)
