"""Mean-teacher fine-tuning: nnU-Net's supervised step plus a consistency loss on unlabeled patches.

An EMA copy of the whole network (the teacher) predicts on unlabeled patches with Gaussian noise
added; the student (nnU-Net's network, trained by SGD) must agree with it at full resolution. The
supervised loss (Dice + CE with deep supervision) is nnU-Net's, unchanged. The teacher is what is
validated, saved as ``network_weights`` and predicted with; the student stays in the checkpoint for
``--c``. Defaults and their sources: docs/methods/mean_teacher.md.

Unlabeled cases of a fold (data/unlabeled_split.py): the dataset's cases that are neither training
nor validation cases of that fold, plus the plugin's preprocessed unlabeled folder
(integration/unlabeled.py). They come through a second nnUNetDataLoader with nnU-Net's own training
transforms and no foreground oversampling; their labels are never read.
"""
from contextlib import contextmanager
from os.path import isdir, isfile, join
from time import perf_counter

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_ssl.atomic_io import atomic_save_json, atomic_torch_save
from nnunet_ssl.blocks.consistency import consistency_weight, probability_mse, teacher_input_noise
from nnunet_ssl.blocks.momentum import make_momentum_copy, mean_teacher_decay, update_momentum
from nnunet_ssl.data.unlabeled_split import FoldCases, fold_cases
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.encoder_loader import unwrap
from nnunet_ssl.integration.trainers.finetune import (SSLInitTrainer, SSLInitTrainer_decoderFirst,
                                                     SSLInitTrainer_lowEncoderLR, SSLScratchTrainer)
from nnunet_ssl.integration.unlabeled import CombinedCases, WithoutClassLocations, plugin_folder

CHECKPOINT_KEY = "nnunet_ssl_mean_teacher"  # the student's weights; 'network_weights' is the teacher
CASES_FILE = "mean_teacher_cases.json"  # in the fold folder: labeled / validation / unlabeled case ids


def _user_error(error: SSLUserError) -> SystemExit:
    """Inside nnUNetv2_train an SSLUserError ends the run with its message, without a traceback."""
    return SystemExit(f"\nnnunet-ssl error: {error.problem}" + (f"\n  Fix: {error.fix}" if error.fix else ""))


class MeanTeacherMixin:
    """Put before a MatchedScheduleTrainer subclass; the schedule, init and recipe stay the base's."""

    EMA_DECAY: float = 0.99  # [code: yulequan/UA-MT --ema_decay 0.99; Tarvainen & Valpola: 0.99 in ramp-up]
    EMA_DECAY_AFTER_RAMPUP: float | None = None  # None: one decay (UA-MT); 0.999 = Tarvainen & Valpola [paper]
    CONSISTENCY_MAX_WEIGHT: float = 0.1  # [code: yulequan/UA-MT --consistency 0.1]
    # the sigmoid ramp spans this fraction of training [code: UA-MT ramps over 40 x 150 = 6000 of 6000 iterations]
    CONSISTENCY_RAMPUP_FRACTION: float = 1.0
    TEACHER_NOISE_STD: float = 0.1  # [code: yulequan/UA-MT, clamp(randn * 0.1, -0.2, 0.2)]
    TEACHER_NOISE_CLIP: float = 0.2  # [code: yulequan/UA-MT]
    UNLABELED_BATCH_SIZE: int | None = None  # None: nnU-Net's batch size [code: UA-MT, 2 labeled + 2 unlabeled]

    teacher: torch.nn.Module | None = None
    dataloader_unlabeled = None
    _teacher_restored = False

    # ---- set-up -------------------------------------------------------------------------------------
    def initialize(self):
        if self.is_cascaded:
            raise _user_error(SSLUserError(
                f"{type(self).__name__} does not support the cascade ({self.configuration_name}): its unlabeled "
                "cases have no previous-stage segmentation.", "train a mean teacher on 2d, 3d_lowres or 3d_fullres"))
        super().initialize()
        self.teacher = make_momentum_copy(unwrap(self.network)).eval()  # gradients off, never in the optimiser
        self._teacher_forward = torch.compile(self.teacher) if self._do_i_compile() else self.teacher

    def total_iterations(self) -> int:
        return self.num_epochs * self.num_iterations_per_epoch

    def rampup_iterations(self) -> int:
        return round(self.CONSISTENCY_RAMPUP_FRACTION * self.total_iterations())

    def on_train_start(self):
        super().on_train_start()
        if not self._teacher_restored:  # a fresh start (weights may come from -pretrained_weights after initialize)
            self.teacher.load_state_dict(unwrap(self.network).state_dict())
        self.dataloader_unlabeled = self._unlabeled_dataloader(self._fold_cases())
        self.print_to_log_file(
            f"mean teacher: EMA decay {self.EMA_DECAY}" + (f" ({self.EMA_DECAY_AFTER_RAMPUP} after the ramp-up)"
                                                           if self.EMA_DECAY_AFTER_RAMPUP is not None else "")
            + f", consistency = MSE of class probabilities at full resolution, weight up to "
            f"{self.CONSISTENCY_MAX_WEIGHT} by a sigmoid ramp over {self.rampup_iterations()} of "
            f"{self.total_iterations()} iterations, teacher input noise N(0, {self.TEACHER_NOISE_STD}^2) clipped at "
            f"{self.TEACHER_NOISE_CLIP}, unlabeled batch {self._unlabeled_batch_size()}")

    def _unlabeled_batch_size(self) -> int:
        return self.UNLABELED_BATCH_SIZE or self.batch_size

    def _fold_cases(self) -> FoldCases:
        """This fold's labeled, validation and unlabeled cases; logged and saved in the fold folder."""
        train, validation = self.do_split()
        dataset_cases = self.dataset_class.get_identifiers(self.preprocessed_dataset_folder)
        extra_folder = plugin_folder(self.plans_manager.dataset_name, self.configuration_manager.data_identifier)
        extra = nnUNetDatasetBlosc2.get_identifiers(extra_folder) if isdir(extra_folder) else []
        try:
            cases = fold_cases(dataset_cases, train, validation, extra)
        except ValueError as e:
            raise _user_error(SSLUserError(f"{e} ({extra_folder}).", "rename the unlabeled folder's cases")) from None
        if not cases.unlabeled:
            raise _user_error(SSLUserError(
                f"fold {self.fold} leaves no unlabeled case: all {len(dataset_cases)} cases of "
                f"{self.plans_manager.dataset_name} are training or validation cases, and {extra_folder} holds none.",
                f"train a label-budget fold (nnUNetv2_ssl_splits -d {self.plans_manager.dataset_name} --labeled N), "
                f"or preprocess unlabeled images into {extra_folder} with nnUNetv2_ssl_pretrain --unlabeled DIR "
                f"(or --imagesTs)"))
        counts = cases.counts()
        self.print_to_log_file(
            f"mean teacher cases of fold {self.fold}: {counts['labeled']} labeled, {counts['validation']} validation "
            f"(never used for training), {counts['unlabeled']} unlabeled = {counts['unlabeled_from_dataset']} other "
            f"cases of the dataset (labels ignored) + {counts['unlabeled_extra']} from {extra_folder}")
        if self.local_rank == 0:
            atomic_save_json({"fold": self.fold, "unlabeled_extra_folder": extra_folder, **cases.to_json()},
                             join(self.output_folder, CASES_FILE), indent=1)
        return cases

    def _unlabeled_dataloader(self, cases: FoldCases):
        """nnU-Net's own data loader and training transforms over the unlabeled cases: the same patch and
        augmentation as the labeled batch, but uniform patch locations (no foreground oversampling)."""
        parts = []
        if cases.unlabeled_from_dataset:
            parts.append(self.dataset_class(self.preprocessed_dataset_folder, cases.unlabeled_from_dataset))
        if cases.unlabeled_extra:
            parts.append(WithoutClassLocations(nnUNetDatasetBlosc2(
                plugin_folder(self.plans_manager.dataset_name, self.configuration_manager.data_identifier),
                cases.unlabeled_extra)))
        dataset = parts[0] if len(parts) == 1 else CombinedCases(*parts)
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        transforms = self.get_training_transforms(
            self.configuration_manager.patch_size, rotation, self._get_deep_supervision_scales(), mirror_axes,
            dummy_2d, use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=False,
            foreground_labels=self.label_manager.foreground_labels,
            regions=self.label_manager.foreground_regions if self.label_manager.has_regions else None,
            ignore_label=self.label_manager.ignore_label)
        loader = nnUNetDataLoader(dataset, self._unlabeled_batch_size(), initial_patch_size,
                                  self.configuration_manager.patch_size, self.label_manager,
                                  oversample_foreground_percent=0.0, transforms=transforms)
        processes = get_allowed_n_proc_DA()
        if processes == 0:
            return SingleThreadedAugmenter(loader, None)
        return NonDetMultiThreadedAugmenter(loader, None, num_processes=processes, num_cached=max(6, processes // 2),
                                            seeds=None, pin_memory=self.device.type == "cuda", wait_time=0.002)

    # ---- training -----------------------------------------------------------------------------------
    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._iteration = self.current_epoch * self.num_iterations_per_epoch  # global step, also after --c

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.label_manager.has_regions else torch.softmax(logits, 1)

    def _sync(self) -> None:  # honest timings on CUDA, whose calls return before the work is done
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_step(self, batch: dict) -> dict:
        """nnUNetTrainer.train_step with the unlabeled half: one student forward over labeled and
        unlabeled patches (InstanceNorm is per sample, so this equals two forwards), nnU-Net's loss on
        the labeled part, the weighted consistency on the unlabeled part, then the EMA update."""
        start = perf_counter()
        unlabeled = next(self.dataloader_unlabeled)["data"]
        unlabeled_wait = perf_counter() - start
        data, target = batch["data"].to(self.device, non_blocking=True), batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        unlabeled = unlabeled.to(self.device, non_blocking=True)
        step = self._iteration
        weight = consistency_weight(step, self.CONSISTENCY_MAX_WEIGHT, self.rampup_iterations())

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            teacher_start = perf_counter()
            with torch.no_grad():
                teacher_output = self._teacher_forward(
                    teacher_input_noise(unlabeled, self.TEACHER_NOISE_STD, self.TEACHER_NOISE_CLIP))
            self._sync()
            teacher_seconds = perf_counter() - teacher_start
            output = self.network(torch.cat((data, unlabeled)))
            n = data.shape[0]
            if isinstance(output, (list, tuple)):  # deep supervision: consistency at full resolution only
                supervised_loss = self.loss([o[:n] for o in output], target)
                student_unlabeled, teacher_output = output[0][n:], teacher_output[0]
            else:
                supervised_loss = self.loss(output[:n], target)
                student_unlabeled = output[n:]
            consistency = probability_mse(self._probabilities(student_unlabeled), self._probabilities(teacher_output))
            loss = supervised_loss + weight * consistency

        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        ema_start = perf_counter()
        decay = mean_teacher_decay(step, self.EMA_DECAY, self.EMA_DECAY_AFTER_RAMPUP, self.rampup_iterations())
        update_momentum(unwrap(self.network), self.teacher, decay)
        self._sync()
        ema_seconds = perf_counter() - ema_start
        self._iteration += 1
        # 'loss' is nnU-Net's supervised loss, comparable with plain fine-tuning; the consistency is logged apart
        return {"loss": supervised_loss.detach().cpu().numpy(), "consistency": consistency.detach().cpu().numpy(),
                "consistency_weight": np.float64(weight), "ema_decay": np.float64(decay),
                "step_seconds": np.float64(perf_counter() - start),
                "unlabeled_wait_seconds": np.float64(unlabeled_wait),
                "teacher_seconds": np.float64(teacher_seconds), "ema_seconds": np.float64(ema_seconds)}

    def on_train_epoch_end(self, train_outputs: list[dict]):
        mean = {k: float(np.mean([o[k] for o in train_outputs])) for k in train_outputs[0] if k != "loss"}
        self.print_to_log_file(
            f"mean teacher: consistency {mean['consistency']:.5f} x weight {mean['consistency_weight']:.4f}, "
            f"EMA decay {mean['ema_decay']:.4f}; train step {mean['step_seconds']:.3f} s, of which unlabeled batch "
            f"wait {mean['unlabeled_wait_seconds']:.3f} s, teacher forward {mean['teacher_seconds']:.3f} s, "
            f"EMA update {mean['ema_seconds']:.4f} s (the student's unlabeled half is inside its forward/backward)")
        super().on_train_epoch_end([{"loss": o["loss"]} for o in train_outputs])

    def on_train_end(self):
        super().on_train_end()
        if isinstance(self.dataloader_unlabeled, NonDetMultiThreadedAugmenter):
            self.dataloader_unlabeled._finish()
        self.dataloader_unlabeled = None

    # ---- the teacher is the model --------------------------------------------------------------------
    def set_deep_supervision_enabled(self, enabled: bool):
        for network in (self.network, self.teacher):
            if network is not None:
                unwrap(network).decoder.deep_supervision = enabled

    @contextmanager
    def _teacher_as_network(self):
        student, self.network = self.network, self._teacher_forward
        try:
            yield
        finally:
            self.network = student

    def validation_step(self, batch: dict) -> dict:  # pseudo-Dice (and so checkpoint_best) of the teacher
        with self._teacher_as_network():
            return super().validation_step(batch)

    def perform_actual_validation(self, save_probabilities: bool = False):
        with self._teacher_as_network():
            return super().perform_actual_validation(save_probabilities)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint with the teacher as ``network_weights`` (what nnUNetv2_predict, --val and
        nnUNetv2_ssl_export load) and the student under CHECKPOINT_KEY (what --c resumes)."""
        super().save_checkpoint(filename)
        if self.local_rank != 0 or self.disable_checkpointing or not isfile(filename):
            return
        checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
        checkpoint[CHECKPOINT_KEY] = {"student_weights": checkpoint["network_weights"]}
        checkpoint["network_weights"] = {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()}
        atomic_torch_save(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint):
        super().load_checkpoint(filename_or_checkpoint)  # puts network_weights (the teacher) into the network
        checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False)
        network = unwrap(self.network)
        self.teacher.load_state_dict(network.state_dict())
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is not None:
            network.load_state_dict(saved["student_weights"])
            self.print_to_log_file("mean teacher: resumed the teacher and the student from the checkpoint")
        else:
            self.print_to_log_file("mean teacher: the checkpoint holds one network (not written by a mean-teacher "
                                   "trainer); student and teacher both start from it")
        self._teacher_restored = True


class SSLMeanTeacherTrainer(MeanTeacherMixin, SSLScratchTrainer):
    """Mean teacher from random init, on SSLScratchTrainer's schedule: the semi-supervised control."""


class SSLInitMeanTeacherTrainer(MeanTeacherMixin, SSLInitTrainer):
    """Mean teacher from a pretrained encoder (loaded as SSLInitTrainer does; the teacher starts as its copy)."""


class SSLInitMeanTeacherTrainer_decoderFirst(MeanTeacherMixin, SSLInitTrainer_decoderFirst):
    """Mean teacher with SSLInitTrainer_decoderFirst's encoder learning rates."""


class SSLInitMeanTeacherTrainer_lowEncoderLR(MeanTeacherMixin, SSLInitTrainer_lowEncoderLR):
    """Mean teacher with SSLInitTrainer_lowEncoderLR's encoder learning rates."""
