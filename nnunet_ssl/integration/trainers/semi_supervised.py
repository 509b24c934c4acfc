"""What every semi-supervised fine-tuning trainer shares: the fold's unlabeled cases through nnU-Net's own
loader, an EMA teacher that is the model (validated, saved as ``network_weights``, predicted with), the
student in the checkpoint for an exact ``--c``, deep supervision, the optimiser step and per-epoch logs.

The trainers (mean_teacher.py, unimatch.py, bcp.py) hold only their training step and its log.

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
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunet_ssl.atomic_io import atomic_save_json, atomic_torch_save
from nnunet_ssl.blocks.pseudo_labels import confident_pseudo_labels
from nnunet_ssl.blocks.momentum import make_momentum_copy, mean_teacher_decay, update_momentum
from nnunet_ssl.data.unlabeled_split import FoldCases, fold_cases
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.encoder_loader import unwrap
from nnunet_ssl.integration.trainers.finetune import user_error
from nnunet_ssl.integration.unlabeled import CombinedCases, WithoutClassLocations, plugin_folder

CHECKPOINT_KEY = "nnunet_ssl_mean_teacher"  # the student's weights; 'network_weights' is the teacher


class SemiSupervisedMixin:
    """Put before a MatchedScheduleTrainer subclass; the schedule, init and recipe stay the base's.
    Subclasses write ``train_step`` (with ``next_unlabeled``, ``optimizer_step`` and ``ema_step``),
    ``describe`` and ``log_epoch``."""

    LOG_NAME = "semi-supervised"  # how log lines and messages name the method
    CASES_FILE = "semi_supervised_cases.json"  # in the fold folder: labeled / validation / unlabeled case ids
    EMA_DECAY: float = 0.99  # [code: yulequan/UA-MT --ema_decay 0.99; Tarvainen & Valpola: 0.99 in ramp-up]
    EMA_DECAY_AFTER_RAMPUP: float | None = None  # None: one decay (UA-MT); 0.999 = Tarvainen & Valpola [paper]
    # the unsupervised weight's sigmoid ramp spans this fraction of training; also ends the EMA's first decay
    CONSISTENCY_RAMPUP_FRACTION: float = 1.0  # [code: UA-MT ramps over 40 x 150 = 6000 of 6000 iterations]
    UNLABELED_BATCH_SIZE: int | None = None  # None: nnU-Net's batch size [code: UA-MT, 2 labeled + 2 unlabeled]
    # a supervised-only first part of training (0: none); at its end the teacher becomes a copy of the student,
    # so that pseudo-labels start from a trained model instead of a random one (BCP's pre-training)
    WARM_START_FRACTION: float = 0.0

    teacher: torch.nn.Module | None = None
    dataloader_unlabeled = None
    _teacher_restored = False

    # ---- set-up -------------------------------------------------------------------------------------
    def initialize(self):
        if self.is_cascaded:
            raise user_error(SSLUserError(
                f"{type(self).__name__} does not support the cascade ({self.configuration_name}): its unlabeled "
                f"cases have no previous-stage segmentation.", f"train a {self.LOG_NAME} on 2d, 3d_lowres or "
                                                               f"3d_fullres"))
        super().initialize()
        self.teacher = make_momentum_copy(unwrap(self.network)).eval()  # gradients off, never in the optimiser
        self._teacher_forward = torch.compile(self.teacher) if self._do_i_compile() else self.teacher

    def total_iterations(self) -> int:
        return self.num_epochs * self.num_iterations_per_epoch

    def rampup_iterations(self) -> int:
        return round(self.CONSISTENCY_RAMPUP_FRACTION * self.total_iterations())

    def warm_start_iterations(self) -> int:
        return round(self.WARM_START_FRACTION * self.total_iterations())

    def in_warm_start(self, step: int) -> bool:
        """Whether ``step`` is a supervised-only warm-start step. The first step after the warm start makes the
        teacher a copy of the (warm-started) student; a run resumed later keeps its checkpoint's teacher."""
        warm = self.warm_start_iterations()
        if step == warm > 0:
            self.teacher.load_state_dict(unwrap(self.network).state_dict())
            self.print_to_log_file(f"{self.LOG_NAME}: warm start done after {step} iterations; the teacher is now "
                                   "a copy of the student")
        return step < warm

    def on_train_start(self):
        super().on_train_start()
        if not self._teacher_restored:  # a fresh start (weights may come from -pretrained_weights after initialize)
            self.teacher.load_state_dict(unwrap(self.network).state_dict())
        self.dataloader_unlabeled = self._unlabeled_dataloader(self._fold_cases())
        self.print_to_log_file(f"{self.LOG_NAME}: {self.describe()}")

    def describe(self) -> str:
        """The method's settings, logged once at the start."""
        raise NotImplementedError

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
            raise user_error(SSLUserError(f"{e} ({extra_folder}).", "rename the unlabeled folder's cases")) from None
        if not cases.unlabeled:
            raise user_error(SSLUserError(
                f"fold {self.fold} leaves no unlabeled case: all {len(dataset_cases)} cases of "
                f"{self.plans_manager.dataset_name} are training or validation cases, and {extra_folder} holds none.",
                f"train a label-budget fold (nnUNetv2_ssl_splits -d {self.plans_manager.dataset_name} --labeled N), "
                f"or preprocess unlabeled images into {extra_folder} with nnUNetv2_ssl_pretrain --unlabeled DIR "
                f"(or --imagesTs)"))
        counts = cases.counts()
        self.print_to_log_file(
            f"{self.LOG_NAME} cases of fold {self.fold}: {counts['labeled']} labeled, {counts['validation']} validation "
            f"(never used for training), {counts['unlabeled']} unlabeled = {counts['unlabeled_from_dataset']} other "
            f"cases of the dataset (labels ignored) + {counts['unlabeled_extra']} from {extra_folder}")
        if self.local_rank == 0:
            atomic_save_json({"fold": self.fold, "unlabeled_extra_folder": extra_folder, **cases.to_json()},
                             join(self.output_folder, self.CASES_FILE), indent=1)
        return cases

    def unlabeled_transforms(self):
        """nnU-Net's own training transforms for the unlabeled patches; subclasses may append (strong views)."""
        rotation, dummy_2d, _, mirror_axes = self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        return self.get_training_transforms(
            self.configuration_manager.patch_size, rotation, self._get_deep_supervision_scales(), mirror_axes,
            dummy_2d, use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=False,
            foreground_labels=self.label_manager.foreground_labels,
            regions=self.label_manager.foreground_regions if self.label_manager.has_regions else None,
            ignore_label=self.label_manager.ignore_label)

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
        initial_patch_size = self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[2]
        loader = nnUNetDataLoader(dataset, self._unlabeled_batch_size(), initial_patch_size,
                                  self.configuration_manager.patch_size, self.label_manager,
                                  oversample_foreground_percent=0.0, transforms=self.unlabeled_transforms())
        processes = get_allowed_n_proc_DA()
        if processes == 0:
            return SingleThreadedAugmenter(loader, None)
        return NonDetMultiThreadedAugmenter(loader, None, num_processes=processes, num_cached=max(6, processes // 2),
                                            seeds=None, pin_memory=self.device.type == "cuda", wait_time=0.002)

    # ---- training helpers ---------------------------------------------------------------------------
    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._iteration = self.current_epoch * self.num_iterations_per_epoch  # global step, also after --c

    def next_unlabeled(self) -> tuple[torch.Tensor, float]:
        """The next unlabeled batch's images on the device, and the seconds spent waiting for it."""
        start = perf_counter()
        unlabeled = next(self.dataloader_unlabeled)["data"]
        wait = perf_counter() - start
        return unlabeled.to(self.device, non_blocking=True), wait

    def labeled_to_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | list[torch.Tensor]]:
        data, target = batch["data"].to(self.device, non_blocking=True), batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        return data, target

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.label_manager.has_regions else torch.softmax(logits, 1)

    def teacher_pseudo_labels(self, images: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's full-resolution pseudo-labels of ``images`` and where they are confident
        (blocks.pseudo_labels.confident_pseudo_labels), without gradient. One class per voxel: the trainers that call
        it refuse region-based training (unimatch.PseudoLabelMixin), so the probabilities are a softmax."""
        with torch.no_grad():
            output = self._teacher_forward(images)
            output = output[0] if isinstance(output, (list, tuple)) else output
            return confident_pseudo_labels(self._probabilities(output.float()), threshold)

    def _sync(self) -> None:  # honest timings on CUDA, whose calls return before the work is done
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """nnUNetTrainer.train_step's backward, gradient clipping (12) and SGD step."""
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

    def ema_step(self, step: int) -> tuple[float, float]:
        """The teacher's EMA update after step ``step``: (decay, seconds)."""
        start = perf_counter()
        decay = mean_teacher_decay(step, self.EMA_DECAY, self.EMA_DECAY_AFTER_RAMPUP, self.rampup_iterations())
        update_momentum(unwrap(self.network), self.teacher, decay)
        self._sync()
        return decay, perf_counter() - start

    def on_train_epoch_end(self, train_outputs: list[dict]):
        mean = {k: float(np.nanmean([o[k] for o in train_outputs])) if np.ndim(train_outputs[0][k]) == 0
                else np.nanmean(np.stack([o[k] for o in train_outputs]), 0)
                for k in train_outputs[0] if k != "loss"}
        self.log_epoch(mean)
        super().on_train_epoch_end([{"loss": o["loss"]} for o in train_outputs])

    def log_epoch(self, mean: dict) -> None:
        """Write the epoch's means of what train_step returned (besides 'loss') to the training log."""
        raise NotImplementedError

    def on_train_end(self):
        super().on_train_end()
        if isinstance(self.dataloader_unlabeled, NonDetMultiThreadedAugmenter):
            self.dataloader_unlabeled._finish()
        self.dataloader_unlabeled = None

    # ---- pseudo-labels with nnU-Net's loss and deep supervision -------------------------------------
    def ignore_value(self) -> int:
        """The label value the pseudo-label loss skips: the dataset's ignore label, else one past the classes."""
        ignore = self.label_manager.ignore_label
        return ignore if ignore is not None else self.label_manager.num_segmentation_heads

    def pseudo_label_loss(self):
        """nnU-Net's Dice + CE (its settings) that skips voxels labeled ``ignore_value()``, wrapped in
        nnU-Net's deep-supervision weights like ``self.loss``: the loss on (partly) pseudo-labeled targets."""
        if getattr(self, "_pseudo_label_loss", None) is None:
            loss = DC_and_CE_loss({"batch_dice": self.configuration_manager.batch_dice, "smooth": 1e-5,
                                   "do_bg": False, "ddp": self.is_ddp}, {}, weight_ce=1, weight_dice=1,
                                  ignore_label=self.ignore_value(), dice_class=MemoryEfficientSoftDiceLoss)
            if isinstance(self.loss, DeepSupervisionWrapper):
                loss = DeepSupervisionWrapper(loss, self.loss.weight_factors)
            self._pseudo_label_loss = loss
        return self._pseudo_label_loss

    def targets_for_outputs(self, labels: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """(B, *spatial) integer labels -> nnU-Net's target format: (B, 1, ...) at full resolution, or one
        per deep-supervision output, downsampled exactly as nnU-Net's targets (DownsampleSegForDSTransform:
        nearest-exact on the same scales). An ignored voxel stays ignored at each resolution."""
        labels = labels.to(torch.int16)
        if not self.enable_deep_supervision:
            return labels[:, None]
        # the transform takes one (C, *spatial) sample: the batch axis goes through it as the channel axis
        downsampled = DownsampleSegForDSTransform(self._get_deep_supervision_scales())(segmentation=labels)
        return [t[:, None] for t in downsampled["segmentation"]]

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
            self.print_to_log_file(f"{self.LOG_NAME}: resumed the teacher and the student from the checkpoint")
        else:
            self.print_to_log_file(f"{self.LOG_NAME}: the checkpoint holds one network (not written by a "
                                   "semi-supervised trainer); student and teacher both start from it")
        self._teacher_restored = True
