"""The pretraining loop: plans-built encoder + a method, on nnU-Net's preprocessed data.

It only wires collaborators together: the dataset (integration.dataset), the method
(nnunet_ssl.methods), the sampler the method makes, checkpoints (integration.checkpoint) and the
progress log. Device handling follows nnU-Net: bf16 autocast on CUDA, plain fp32 on CPU/MPS.
"""
import contextlib
import json
import os
import random
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from tqdm import tqdm

from nnunet_ssl.blocks.distributed import rank, world_size
from nnunet_ssl.blocks.health import health_plateau, learning_verdict, stage_redundancy, weight_scale_ratios
from nnunet_ssl.data.positions import largest_useful_patch, smallest_trainable_patch, too_small_patch_problem
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration import locations
from nnunet_ssl.atomic_io import atomic_torch_save
from nnunet_ssl.integration.checkpoint import SSLCheckpointMeta, decoder_weights, save_final_checkpoint
from nnunet_ssl.integration.dataset import PreprocessedDataset
from nnunet_ssl.integration.encoder_loader import rescale_convs_to_he_std
from nnunet_ssl.integration.encoder import (architecture_hash, bottleneck_channels, build_planned_network,
                                            build_reconstruction_network)
from nnunet_ssl.integration.progress import ProgressLog, save_preview
from nnunet_ssl.integration.provenance import training_data_description
from nnunet_ssl.methods import DataGeometry, Hyperparameters, get_method
from nnunet_ssl.methods.base import OneOf, Range


# two patches per process: with one, the two views of that patch are the only embeddings, so there is
# no negative (loss 0, nothing learnt), and the heads' BatchNorm cannot normalise a single sample
MIN_BATCH_PER_PROCESS = 2
CONV_WEIGHT_SCALES = ("he", "free")  # the values of PretrainSchedule.conv_weight_scale (--conv-weight-scale)
BATCH_SIZE_WHY = ("each process needs 2 patches: with 1, its two views are the only embeddings, so there are no "
                  "negatives, the loss is 0 and nothing is learnt")


@dataclass(frozen=True)
class PretrainSchedule(Hyperparameters):
    num_epochs: int = 100  # [assumption] budget by iterations, spec 3.3 suggests 200 x 250 on a GPU
    iterations_per_epoch: int = 250  # nnU-Net's epoch length [nnU-Net]
    batch_size: int = 16  # patches per step, 2 views each [spec 3.3: >= 16 patches]
    initial_lr: float = 0.1  # SGD, cosine to 0 per iteration [code: train_contrast.py, lr_scheduler.py]
    momentum: float = 0.9  # [code]
    weight_decay: float = 1e-5  # [code]
    # "he": after every step, every encoder conv that feeds an InstanceNorm is rescaled to nnU-Net's He-init
    # std (the same function; keeps its effective learning rate, lr / |w|^2, from decaying as |w| grows).
    # "free": plain SGD, the weights grow (issue 10: 2.8-7.1x He std after the demo's PCL run)
    # [measured, hippocampus PCL 3d, 60 steps at lr 0.1]: "free" grew every conv to 1.6-4.9x He std, "he" kept
    # 1.0x with the same health (loss 0.78 vs 0.77 x collapse, retrieval 0.78 vs 0.78); docs/methods/readouts.md
    conv_weight_scale: str = "he"
    patch_size: tuple | None = None  # None: the method chooses (PCL: plans patch, shorter on the position axis)
    seed: int = 0

    OWNER: ClassVar[str] = "schedule"
    LIMITS: ClassVar[dict] = {
        "num_epochs": Range(1), "iterations_per_epoch": Range(1),
        "batch_size": Range(MIN_BATCH_PER_PROCESS, why=BATCH_SIZE_WHY),
        "initial_lr": Range(0, low_open=True), "momentum": Range(0, 1, high_open=True), "weight_decay": Range(0),
        "patch_size": Range(1), "seed": Range(0), "conv_weight_scale": OneOf(CONV_WEIGHT_SCALES)}
    OPTIONS: ClassVar[dict] = {"num_epochs": "--epochs", "iterations_per_epoch": "--iterations-per-epoch",
                               "batch_size": "--batch-size", "initial_lr": "--lr", "patch_size": "--patch-size",
                               "seed": "--seed", "conv_weight_scale": "--conv-weight-scale"}

    @classmethod
    def example(cls, name: str, default) -> str:
        if name == "patch_size":
            return "pass --patch-size with one positive length per axis (multiples of the network's strides), " \
                   "or leave it out for the method's choice"
        option = cls.OPTIONS.get(name)
        value = default if name != "initial_lr" else f"{default} (the default; lower it if the loss rises)"
        return f"e.g. {option} {value}" if option else f"set schedule.{name} to e.g. {default} in the recipe"


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compile_wanted(device: torch.device, environ=os.environ) -> bool:
    """nnU-Net's rule (nnUNetTrainer._do_i_compile): torch.compile on CUDA, not on Windows, unless
    nnUNet_compile says false; never on CPU or MPS, where nnU-Net found it crashing for 2D models."""
    if device.type != "cuda" or os.name == "nt":
        return False
    return environ.get("nnUNet_compile", "true").lower() in ("true", "1", "t")


# Divergence guard [assumption]: stop when an epoch's mean loss is both DIVERGENCE_FACTOR times the best
# earlier epoch's and above the method's collapsed-embedding loss (with a full queue, where it has one):
# worse than constant embeddings and rising, the signature of a too large learning rate (the issue's
# --lr 1e3 run on hippocampus climbed 4.7 -> 6.8, collapsed value 4.9). A queue that fills raises the loss
# but not above the full-queue collapsed value. Only from a global batch of DIVERGENCE_MIN_BATCH on: with
# fewer embeddings a random start already lies far above the collapsed value (measured: batch 4 on the
# synthetic test data, first step 5.4, collapsed 2.8; batch 16 on hippocampus, first step 5.5, collapsed 4.9).
DIVERGENCE_FACTOR = 1.25
DIVERGENCE_MIN_BATCH = 8


def epoch_seed(seed: int, rank_: int, epoch: int) -> int:
    """The seed of one epoch's data stream on one process: a resumed run draws the batches the
    uninterrupted run would have drawn from that epoch on, never the first epochs' again."""
    return int(np.random.SeedSequence([seed, rank_, epoch]).generate_state(1)[0])


def seed_data_stream(seed: int, rank_: int, epoch: int) -> None:
    """Seed everything the samplers and augmentations draw from (numpy, random, torch on CPU)."""
    value = epoch_seed(seed, rank_, epoch)
    np.random.seed(value)
    random.seed(value)
    torch.random.manual_seed(value)


def plateau_message(plateau: dict) -> str:
    """One line on whether the run was long enough, from blocks.health.health_plateau."""
    if not plateau["per_curve"]:
        return "health curves: none for this method (no collapse value, retrieval or trivial loss), no plateau check"
    if plateau["too_short"]:
        return f"health curves: {plateau['epochs']} epoch(s) are too few to tell whether they stopped rising"
    if plateau["plateau_epoch"] is not None:
        return (f"health curves ({', '.join(plateau['per_curve'])}) stopped rising at epoch "
                f"{plateau['plateau_epoch']} of {plateau['epochs']}: doubling it added < {plateau['gain']}")
    return (f"health curves still rising at the end ({', '.join(plateau['still_rising'])}: no doubling within "
            f"{plateau['epochs']} epochs added < {plateau['gain']}): a longer pretraining (--epochs) may learn more")


def divergence_problem(epoch_loss: float, best_earlier_loss: float | None, collapsed_loss: float | None,
                       batch_size: int, factor: float = DIVERGENCE_FACTOR) -> str | None:
    """Why an epoch's mean loss means the run diverged, or None (also when the guard does not apply:
    the first epoch, no collapsed value from the method, or a batch below DIVERGENCE_MIN_BATCH)."""
    if collapsed_loss is None or best_earlier_loss is None or batch_size < DIVERGENCE_MIN_BATCH:
        return None
    if not (epoch_loss > factor * best_earlier_loss and epoch_loss > collapsed_loss):
        return None
    return (f"the loss rose to {epoch_loss:.3f}, above {factor} x the best epoch's {best_earlier_loss:.3f} and above "
            f"{collapsed_loss:.3f}, the loss of embeddings that are all equal: training diverges")


def _augmenter(sampler, device: torch.device, seed: int):
    n_proc = get_allowed_n_proc_DA() if device.type == "cuda" else 0  # on CPU the workers would steal the cores
    if n_proc == 0:
        return SingleThreadedAugmenter(sampler, None)
    # workers draw from their own seeds: derived from the start epoch, so a resumed run does not replay
    return NonDetMultiThreadedAugmenter(sampler, None, n_proc, num_cached=max(6, n_proc // 2),
                                        seeds=[(seed + i) % 2 ** 32 for i in range(n_proc)],
                                        pin_memory=True, wait_time=0.002)


def _shut_down(batches) -> None:
    """Stop an augmenter's worker processes (a no-op for the single-threaded one)."""
    finish = getattr(batches, "_finish", None)
    if finish is not None:
        finish()


def check_patch_request(data: PreprocessedDataset, requested_patch_size) -> list[int]:
    """The network's total stride per axis, after the checks the plans alone decide (no case is read): a
    supported configuration, a plans patch the network trains on, a requested patch of strides and of
    more than one bottleneck voxel."""
    strides = np.array(data.configuration.network_arch_init_kwargs["strides"], dtype=int)
    divisors = [int(d) for d in np.prod(np.atleast_2d(strides), axis=0)]
    ndim = len(data.configuration.patch_size)
    if ndim not in (2, 3) or len(divisors) != ndim:
        raise SSLUserError(f"configuration {data.configuration_name!r} has a {ndim}D patch "
                           f"{list(data.configuration.patch_size)} and strides for {len(divisors)} axes; "
                           "only nnU-Net's 2D and 3D U-Net configurations are supported.",
                           "use -c 2d or -c 3d_fullres")
    plans_too_small = too_small_patch_problem(data.configuration.patch_size, divisors)
    if plans_too_small and requested_patch_size is None:
        raise SSLUserError(f"the plans {data.plans_manager.plans_name} {data.configuration_name}: {plans_too_small}.",
                           "plan again with a larger patch (nnUNetv2_ssl_plan_cpu --overwrite with a larger "
                           "--max-patch-voxels), or pass --patch-size")
    if requested_patch_size is not None:
        bad = [(s, d) for s, d in zip(requested_patch_size, divisors) if s % d]
        if len(requested_patch_size) != len(divisors) or bad:
            raise SSLUserError(f"patch size {list(requested_patch_size)} does not fit the network: each axis must "
                               f"be a multiple of its total stride {divisors}.",
                               "choose --patch-size with multiples of " + " ".join(map(str, divisors)))
        too_small = too_small_patch_problem(requested_patch_size, divisors)
        if too_small:
            raise SSLUserError(f"--patch-size: {too_small}.",
                               "pass a --patch-size with more than one total stride on some axis, e.g. "
                               + " ".join(map(str, smallest_trainable_patch(divisors))))
    return divisors


def _data_geometry(data: PreprocessedDataset, cases, requested_patch_size) -> DataGeometry:
    """Plans patch, network divisors and case shapes. 2D configurations (patch of length 2) give
    2 divisors (from the 2D strides) while ``image_shapes`` stay the stored 3D (Z, Y, X) volumes:
    nnU-Net's 2d data are whole volumes sliced along axis 0 at load time."""
    divisors = check_patch_request(data, requested_patch_size)
    shapes, directions = [], []
    for case in data.case_ids:
        image, _seg, _prev, properties = cases.load_case(case)
        shapes.append(list(image.shape[1:]))
        directions.append(properties.get("sitk_stuff", {}).get("direction"))
    if requested_patch_size is not None:
        limit = largest_useful_patch(divisors, shapes, data.configuration.patch_size)
        if any(s > m for s, m in zip(requested_patch_size, limit)):
            raise SSLUserError(f"patch size {list(requested_patch_size)} is larger than the data allow: at most "
                               f"{limit} (the longest image edge, {max(max(x) for x in shapes)} voxels, or the plans' "
                               f"patch {list(data.configuration.patch_size)}, rounded up to the strides); beyond it a "
                               "patch is only padding, and memory grows with its volume.",
                               "pass a --patch-size within " + " ".join(map(str, limit))
                               + ", or leave it out for the method's choice")
    return DataGeometry(list(data.configuration.patch_size), divisors, shapes,
                        list(requested_patch_size) if requested_patch_size else None,
                        directions if all(d is not None for d in directions) else None,
                        list(data.plans_manager.transpose_forward))


def continuation_conflict(saved_meta: dict, hparams: dict, case_ids: list[str], folder: str,
                          parts: tuple[str, ...] = ("method", "schedule", "derived")) -> SSLUserError | None:
    """Why --c may not continue (or, finished, stand for) the run in ``folder`` whose metadata is
    ``saved_meta``: other cases, or other ``parts`` of the hyperparameters (each differing one named), or None.
    A finished run is compared without "derived" (those need the method built on the data)."""
    before, now = set(saved_meta["case_ids"]), set(case_ids)
    if before != now:
        added, removed = sorted(now - before), sorted(before - now)
        return SSLUserError(f"--c with other cases than the run in {folder} ({len(added)} added, e.g. {added[:3]}; "
                            f"{len(removed)} missing, e.g. {removed[:3]}).",
                            "continue with the original --unlabeled / --imagesTs options, or move that folder "
                            "away to start over")
    saved, asked = (json.loads(json.dumps(h, default=str)) for h in (saved_meta["hparams"], hparams))
    differing = [f"{part}.{key} {saved.get(part, {}).get(key)!r} there, {asked.get(part, {}).get(key)!r} now"
                 for part in parts for key in sorted(set(saved.get(part, {})) | set(asked.get(part, {})))
                 if saved.get(part, {}).get(key) != asked.get(part, {}).get(key)]
    if differing:
        return SSLUserError(f"--c with other hyperparameters than the run in {folder}: {'; '.join(differing)}.",
                            "continue with the original options (schedule options, --set, --recipe), or move "
                            "that folder away to start over")
    return None


class Pretrainer:
    def __init__(self, data: PreprocessedDataset, method_name: str, method_config: dict, schedule: PretrainSchedule,
                 device: torch.device, output_folder: str):
        self.data, self.schedule, self.device, self.output_folder = data, schedule, device, output_folder
        # needs the number of processes (torchrun), known only here; the schedule checked the rest when built
        if schedule.batch_size % world_size() or schedule.batch_size // world_size() < MIN_BATCH_PER_PROCESS:
            raise SSLUserError(f"batch size {schedule.batch_size} does not split over {world_size()} processes "
                               f"into at least {MIN_BATCH_PER_PROCESS} patches each ({BATCH_SIZE_WHY}).",
                               f"use a --batch-size divisible by {world_size()} and at least "
                               f"{MIN_BATCH_PER_PROCESS * world_size()}")
        self.is_main = rank() == 0
        if device.type == "cpu":
            torch.set_flush_denormal(True)  # denormals slow CPU arithmetic by orders of magnitude
        torch.manual_seed(schedule.seed)  # the same initial weights on every rank
        np.random.seed(schedule.seed + rank())  # different patches on every rank
        method_class = get_method(method_name)
        config = method_class.config_class.from_dict(method_config)
        self.cases = data.open_cases()
        geometry = _data_geometry(data, self.cases, schedule.patch_size)
        if method_class.needs_full_network:
            network = build_reconstruction_network(data.plans_manager, data.configuration, data.num_input_channels)
            self.method = method_class(network, bottleneck_channels(data.configuration), config, geometry)
        else:
            network = build_planned_network(data.plans_manager, data.configuration, data.dataset_json,
                                            data.num_input_channels)
            self.method = method_class(network.encoder, bottleneck_channels(data.configuration), config, geometry)
        derived = self.method.derived_values()  # the method may shorten the patch (PCL) or plan clips (MLSSCL)
        network_input = derived.get("patch_size") or derived.get("clip_shape")
        too_small = too_small_patch_problem(network_input, geometry.divisors) if network_input else None
        if too_small:
            raise SSLUserError(f"the {method_name} pretraining input: {too_small}.",
                               "pass a larger --patch-size (or the method's size options with --set)")
        self.method.to(device)
        if compile_wanted(device):
            # in place, before DDP as in nnU-Net: the encoder's state_dict keeps its plain keys (no
            # _orig_mod.), so checkpoints do not depend on it. The heads and the loss stay eager (small,
            # and the queues' Python bookkeeping would break the graph anyway)
            # reconstruction methods run the whole network: compile all of it
            (self.method.network if self.method.needs_full_network else self.method.encoder).compile()
        self.model = self.method  # what the loop calls; DDP-wrapped under torchrun
        if world_size() > 1:
            if device.type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            # a pre-norm readout leaves the last norm's affine parameters out of the loss
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=self.method.readout.kind != "postnorm")
        self.optimizer = torch.optim.SGD(self.method.parameters(), schedule.initial_lr, momentum=schedule.momentum,
                                         weight_decay=schedule.weight_decay)
        total = schedule.num_epochs * schedule.iterations_per_epoch
        self.lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=total)
        self.epoch = 0
        self.resumes: list[dict] = []
        self.saved_epoch: int | None = None  # the epoch checkpoint_latest.pth holds, once one exists
        os.makedirs(output_folder, exist_ok=True)
        self.log = ProgressLog(output_folder, enabled=self.is_main)

    # --- checkpoints -------------------------------------------------------------------------
    def metadata(self) -> SSLCheckpointMeta:
        d, cfg = self.data, self.data.configuration
        hparams = {"method": self.method.config.to_dict(), "schedule": self.schedule.to_dict(),
                   "derived": self.method.derived_values()}
        # plans, data identifier, channels, normalisation, spacing, patch, architecture: what fine-tuning compares
        trained_on = training_data_description(d.plans_manager, d.configuration_name, cfg, d.dataset_json,
                                               d.num_input_channels)
        return SSLCheckpointMeta(
            method=self.method.name, hparams=hparams, dataset_name=d.dataset_name,
            architecture_hash=architecture_hash(cfg), **trained_on, seed=self.schedule.seed,
            case_ids=list(d.case_ids), epochs_completed=self.epoch,
            final_metrics=self.log.history[-1] if self.log.history else {}, health=self.health(),
            resumes=list(self.resumes))

    def health(self) -> dict:
        """The last epoch's learning verdict (blocks.health), where the health curves stopped rising, and the
        encoder's conv weight std against He init."""
        ratios = sorted(weight_scale_ratios(self.method.encoder).values())
        result = {"conv_weight_std_over_he": {"min": ratios[0], "median": ratios[len(ratios) // 2],
                                              "max": ratios[-1]} if ratios else {},
                  "plateau": health_plateau(self.log.history)}
        last = self.log.history[-1] if self.log.history else {}
        # what learning_verdict needs: a collapse value, or a retrieval with its chance
        if "loss" in last and ("loss_collapse" in last or {"top1_retrieval", "top1_chance"} <= last.keys()):
            result.update(learning_verdict(last["loss"], last.get("loss_collapse"), last.get("top1_retrieval"),
                                           last.get("top1_chance")))
        return result

    def save_latest(self) -> None:
        if not self.is_main:
            return
        atomic_torch_save({"method_state": self.method.state_dict(), "optimizer_state": self.optimizer.state_dict(),
                           "scheduler_state": self.lr_scheduler.state_dict(), "epoch": self.epoch,
                           "history": self.log.history, "meta": self.metadata().to_dict()},
                          os.path.join(self.output_folder, locations.LATEST))
        self.saved_epoch = self.epoch

    def resume(self) -> None:
        path = os.path.join(self.output_folder, locations.LATEST)
        if not os.path.isfile(path):
            raise SSLUserError(f"--c given but there is nothing to continue in {self.output_folder}.",
                               "run the same command without --c to start")
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as e:  # truncated or corrupt: nothing to continue from
            raise SSLUserError(f"{path} is not readable (truncated or corrupt?): {type(e).__name__}.",
                               f"move {self.output_folder} away and run without --c to start over") from None
        conflict = continuation_conflict(state["meta"], self.metadata().hparams, self.data.case_ids,
                                         self.output_folder)
        if conflict is not None:
            raise conflict
        self.method.load_state_dict(state["method_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.lr_scheduler.load_state_dict(state["scheduler_state"])
        self.epoch = self.saved_epoch = state["epoch"]
        self.log.history = state["history"]
        self.resumes = list(state["meta"].get("resumes", [])) + [
            {"epoch": self.epoch, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
        self.log.print(f"resumed from {path} at epoch {self.epoch}")

    def save_final(self) -> str:
        meta = self.metadata()
        path = os.path.join(self.output_folder, locations.FINAL)
        if not self.is_main:
            return path
        decoder = decoder_weights(self.method.network) if self.method.needs_full_network else None
        save_final_checkpoint(path, self.method.encoder.state_dict(), meta, decoder)
        return path

    def _write_preview(self, batch: dict) -> None:
        """The method's preview images of the epoch's last batch, as middle slices in a PNG."""
        was_training = self.method.training
        self.method.eval()
        with torch.no_grad(), _autocast(self.device):
            panels = self.method.preview(batch)
        self.method.train(was_training)
        if panels:
            path = os.path.join(self.output_folder, "previews", f"epoch_{self.epoch:04d}.png")
            save_preview(panels, path, f"{self.method.name}, epoch {self.epoch}")

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> str:
        s = self.schedule
        self.log.print(f"{self.method.name} on {self.data.dataset_name} / {self.data.plans_manager.plans_name} / "
                       f"{self.data.configuration_name}: {len(self.data.case_ids)} cases, device {self.device}, "
                       f"{json.dumps(self.method.derived_values())}")
        per_rank_batch = s.batch_size // world_size()
        batches = _augmenter(self.method.make_sampler(self.cases, self.data.case_ids, per_rank_batch), self.device,
                             epoch_seed(s.seed, rank(), self.epoch))
        try:
            self._train_epochs(batches)
        except KeyboardInterrupt:
            self.log.print(self._interrupted_message())
            raise
        finally:
            _shut_down(batches)  # on every exit path, not only on success
        path = self.save_final()
        what = "encoder and decoder" if self.method.needs_full_network else "encoder"
        self.log.print(f"saved pretrained {what}: {path}")
        health = self.health()
        if health.get("verdict") == "no_learning":
            self.log.print(
                f"WARNING: this pretraining shows no learning: {health['reason']}. Fine-tuning from it is likely "
                "no better than from scratch and can be worse; SSLInitTrainer refuses it unless "
                "nnUNet_ssl_allow_unhealthy=1. Try another --set readout=..., a longer run or a different --lr.")
        self.log.print(plateau_message(health["plateau"]))
        return path

    def _kept(self) -> str:
        return (f"checkpoint_latest.pth keeps epoch {self.saved_epoch}" if self.saved_epoch is not None
                else "no checkpoint was written")

    def _restart_advice(self) -> str:
        """After a failed run: --c would continue the bad run and refuses another --lr, so start over."""
        return (f"lower the learning rate (e.g. --lr {self.schedule.initial_lr / 10:g}) and run again"
                + (f" after moving {self.output_folder} away" if self.saved_epoch is not None else ""))

    def _interrupted_message(self) -> str:
        if self.saved_epoch is None:
            return "interrupted before the first epoch finished: no checkpoint was written (run the command again)"
        return (f"interrupted in epoch {self.epoch + 1}; checkpoint_latest.pth holds epoch {self.saved_epoch} "
                "(continue with the same command plus --c)")

    def _train_epochs(self, batches) -> None:
        s = self.schedule
        collapsed = self.method.collapsed_loss(s.batch_size)
        self.method.train()
        while self.epoch < s.num_epochs:
            seed_data_stream(s.seed, rank(), self.epoch)
            sums: dict[str, float] = {}
            start = time.time()
            bar = tqdm(range(s.iterations_per_epoch), desc=f"epoch {self.epoch + 1}/{s.num_epochs}", leave=False,
                       disable=not self.is_main)
            for _ in bar:
                batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                         for k, v in next(batches).items()}
                with _autocast(self.device):
                    loss, metrics = self.model(batch)
                if not torch.isfinite(loss):
                    raise SSLUserError(f"the loss became {loss.item()} at epoch {self.epoch + 1} "
                                       f"({self._kept()}).", self._restart_advice() + " (or check the data "
                                       "normalisation)")
                self.optimizer.zero_grad(set_to_none=True)
                (loss * world_size()).backward()  # DDP averages over ranks; see gather_with_local_grad
                clip = self.method.gradient_clip_norm()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.method.parameters(), clip)
                self.optimizer.step()
                if s.conv_weight_scale == "he":
                    rescale_convs_to_he_std(self.method.encoder)
                self.lr_scheduler.step()
                self.method.after_optimizer_step(self.lr_scheduler.last_epoch, self.lr_scheduler.T_max)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            seconds = time.time() - start
            epoch_metrics = {k: v / s.iterations_per_epoch for k, v in sums.items()}
            images = self.method.encoder_images(batch)
            if images is not None:  # one forward per epoch: is the first stage's output becoming one signal?
                epoch_metrics["stage0_redundancy"] = stage_redundancy(self.method.encoder, images)[0]
            earlier = [h["loss"] for h in self.log.history if "loss" in h]
            diverged = divergence_problem(epoch_metrics["loss"], min(earlier) if earlier else None, collapsed,
                                          s.batch_size)
            if diverged:
                raise SSLUserError(f"{diverged} (epoch {self.epoch + 1}; {self._kept()}).", self._restart_advice())
            self.epoch += 1
            self.log.add_epoch({"epoch": self.epoch, **epoch_metrics, "lr": self.optimizer.param_groups[0]["lr"],
                                "seconds": seconds, "samples_per_s": s.iterations_per_epoch * s.batch_size / seconds})
            for warning in self.method.health_warnings(epoch_metrics):
                self.log.print(f"WARNING: {warning}")
            if self.is_main and self.method.wants_preview(self.epoch, s.num_epochs):
                self._write_preview(batch)
            self.save_latest()
