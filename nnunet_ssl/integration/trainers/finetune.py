"""SSLInitTrainer and its matched from-scratch control: same schedule, only the init differs."""
from dataclasses import dataclass
from os.path import basename, isfile, join

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.warmup import Lin_incr_LRScheduler, PolyLRScheduler_offset
from nnunetv2.training.nnUNetTrainer.variants.lr_schedule.nnUNetTrainer_warmup import nnUNetTrainer_warmup
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.encoder_loader import (check_pretraining_health, load_checkpoint_file,
                                                   load_pretrained_encoder, load_pretrained_network, unwrap)
from nnunet_ssl.integration.locations import check_pinned_method, find_pretrained_checkpoint, model_folder
from nnunet_ssl.integration.provenance import (RECORD, check_against_pretraining, file_sha256, read_record,
                                               record_line, record_problem, training_data_description,
                                               write_record)
from nnunet_ssl.integration.trainers.sized import SizedTrainer


class MatchedScheduleTrainer(SizedTrainer, nnUNetTrainer_warmup):
    """The schedule every arm of a comparison shares: by default stock nnU-Net's (SGD, momentum 0.99,
    Nesterov, poly decay from lr 1e-2, no warm-up), so that matched scratch *is* nnU-Net's trainer.
    ``LINEAR_WARMUP`` adds nnssl's linear warm-up of the whole network over ``WARMUP_EPOCHS`` first,
    through nnU-Net's own nnUNetTrainer_warmup (the ``linearWarmup`` recipe).

    Why no warm-up by default: on hippocampus (M = 5, folds 6/9/12, 2000 iterations) the warm-up
    schedule scored 0.750 +- 0.046 foreground Dice against 0.807 +- 0.021 and 0.797 +- 0.039 in two
    runs of the stock schedule, lower on 3 of 3 folds against each; the two stock runs differed by
    +0.010 [-0.005, +0.034] (docs/studies/hippocampus_curve_gpu_2026-12-04/notes.md).

    Training length lives in class attributes (SizedTrainer; lengths.py names them); ``None`` keeps
    nnU-Net's value.
    """

    NUM_EPOCHS: int | None = 1000  # [nnU-Net]
    LINEAR_WARMUP: bool = False  # [nnU-Net: none]; True: [nnssl PretrainedTrainer]
    WARMUP_EPOCHS: int = 50  # [nnssl PretrainedTrainer: 50 of 1000 epochs]; also decoderFirst's frozen epochs

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # nnUNetTrainer_warmup's stage logic with 0 warm-up epochs is stock poly from epoch 0
        self.warmup_duration_whole_net = self.WARMUP_EPOCHS if self.LINEAR_WARMUP else 0

    def encoder_lr_scale(self, epoch: int) -> float:
        """Encoder learning rate as a fraction of the schedule's; variants override (1 = one rate)."""
        return 1.0

    def load_checkpoint(self, filename_or_checkpoint):
        """nnUNetTrainer_warmup.load_checkpoint (what --c and --val call) uses torch.load's default
        weights_only=True, which torch >= 2.6 refuses for nnU-Net's checkpoints: their log holds numpy
        scalars. Allow exactly those types (nnUNetTrainer itself loads with weights_only=False)."""
        numpy_core = getattr(np, "_core", None) or np.core
        allowed = [numpy_core.multiarray.scalar, np.dtype, *(getattr(np.dtypes, n) for n in np.dtypes.__all__)]
        with torch.serialization.safe_globals(allowed):
            super().load_checkpoint(filename_or_checkpoint)

    def configure_optimizers(self, stage: str = "warmup_all"):
        """nnUNetTrainer_warmup's optimizer and schedulers, with the encoder in its own parameter
        group (group 1; group 0, whose lr nnU-Net logs, holds everything else) so that variants can
        give it another learning rate. A stage switch keeps the optimizer and its momentum."""
        if stage == "warmup_all" and self.warmup_duration_whole_net == 0:
            stage = "train"  # no warm-up: nnUNetTrainer_warmup asks for one at epoch 0 all the same
        if self.training_stage == stage:
            return self.optimizer, self.lr_scheduler
        if stage == "train" and self.training_stage == "warmup_all":  # keep the warm-up's momentum
            optimizer = self.optimizer
        else:
            network = unwrap(self.network)
            encoder_ids = {id(p) for p in network.encoder.parameters()}
            groups = [{"params": [p for p in network.parameters() if id(p) not in encoder_ids]},
                      {"params": list(network.encoder.parameters())}]
            optimizer = torch.optim.SGD(groups, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                                        nesterov=True)
        if stage == "warmup_all":
            scheduler = Lin_incr_LRScheduler(optimizer, self.initial_lr, self.warmup_duration_whole_net)
        else:
            scheduler = PolyLRScheduler_offset(optimizer, self.initial_lr, self.num_epochs,
                                               self.warmup_duration_whole_net)
        self.print_to_log_file(f"{stage}: optimizer and lr schedule set at epoch {self.current_epoch}")
        self.training_stage = stage
        return optimizer, scheduler

    def on_train_epoch_start(self):
        super().on_train_epoch_start()  # the schedulers set every group to the scheduled lr
        scale = self.encoder_lr_scale(self.current_epoch)
        self.optimizer.param_groups[1]["lr"] = self.optimizer.param_groups[0]["lr"] * scale
        if scale != 1.0:
            self.print_to_log_file(f"encoder learning rate: {scale} x {self.optimizer.param_groups[0]['lr']:.5f}")


class SSLScratchTrainer(MatchedScheduleTrainer):
    """Random initialisation with exactly SSLInitTrainer's schedule: the control that isolates
    the effect of pretraining."""


class SSLScratchTrainer_rerun(SSLScratchTrainer):
    """SSLScratchTrainer again, in a model folder of its own: nnU-Net does not seed training, so a
    second run on the same folds measures the run-to-run noise floor every comparison is read against."""


class SSLScratchTrainer_linearWarmup(SSLScratchTrainer):
    """The matched control of SSLInitTrainer_linearWarmup."""

    LINEAR_WARMUP = True


def user_error(error: SSLUserError) -> SystemExit:
    """Inside nnUNetv2_train an SSLUserError ends the run with its message, without a traceback."""
    return SystemExit(f"\nnnunet-ssl error: {error.problem}" + (f"\n  Fix: {error.fix}" if error.fix else ""))


# the files nnUNetv2_train --c / --val restore every weight from (run_training.maybe_load_checkpoint)
NNUNET_CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


@dataclass
class PretrainingChoice:
    path: str
    found_by: str  # what chose the file: nnUNet_ssl_weights, the pinned method, nnUNet_ssl_method, the only one
    expected: dict  # provenance.training_data_description of this run


class SSLInitTrainer(MatchedScheduleTrainer):
    """Fine-tunes from a pretrained encoder (nnUNetv2_ssl_pretrain).

    The encoder is loaded into ``network.encoder`` right after nnU-Net builds the network inside
    initialize(), before torch.compile and DDP wrap it. The checkpoint is the finished pretraining
    for this dataset, plans and configuration; ``nnUNet_ssl_method`` picks one when several exist
    and ``nnUNet_ssl_weights`` names a file directly; a trainer pinned to a method
    (``PRETRAINING_METHOD``) loads only that method's. The decoder keeps its random init.

    Which file was loaded (path, method, sha256) goes into the training log and ``pretrained_init.json`` in
    the fold folder. ``--c`` and ``--val`` restore every weight from nnU-Net's own checkpoint: they load no
    pretraining and look none up, they report the record instead (and --c says when the recorded file is gone
    or changed).
    """

    PRETRAINING_METHOD: str | None = None  # variants may pin a method

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        try:
            # chosen and checked before nnU-Net makes the fold folder and its log, so a refusal writes nothing;
            # a folder with an nnU-Net checkpoint may be --c or --val, which need no pretraining (initialize)
            self._pretraining = None if self._may_restore(plans, configuration, fold) else \
                self._choose_pretraining(PlansManager(plans), configuration, dataset_json)
        except SSLUserError as e:
            raise user_error(e) from None
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._restoring: str | None = None  # the nnU-Net checkpoint load_checkpoint restores (--c, --val)
        # initialize() calls self.build_network_architecture(...) and compiles right after; shadowing
        # it on the instance is the one hook between the two. Inference calls the static method on
        # the class and so builds the plain network.
        self.build_network_architecture = self._build_network_with_pretrained_encoder

    def _may_restore(self, plans: dict, configuration: str, fold) -> bool:
        folder = join(model_folder(plans["dataset_name"], type(self).__name__, plans["plans_name"], configuration),
                      f"fold_{fold}")
        return any(isfile(join(folder, name)) for name in NNUNET_CHECKPOINTS)

    def _choose_pretraining(self, plans_manager: PlansManager, configuration_name: str,
                            dataset_json: dict) -> PretrainingChoice:
        """Which checkpoint, and every refusal that needs only its metadata: a pinned method, health, plans."""
        configuration = plans_manager.get_configuration(configuration_name)
        expected = training_data_description(
            plans_manager, configuration_name, configuration, dataset_json,
            determine_num_input_channels(plans_manager, configuration, dataset_json))
        path, found_by = find_pretrained_checkpoint(plans_manager.dataset_name, plans_manager.plans_name,
                                                    configuration_name, self.PRETRAINING_METHOD)
        _, meta = load_checkpoint_file(path)
        check_pinned_method(self.PRETRAINING_METHOD, meta.method, path, found_by)
        check_pretraining_health(meta, path)
        check_against_pretraining(meta, expected, path)  # refusals here; the load report carries the warnings
        return PretrainingChoice(path, found_by, expected)

    def load_checkpoint(self, filename_or_checkpoint):
        if not self.was_initialized:  # --c / --val: initialize() comes next, and this checkpoint overwrites it all
            self._restoring = filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else "a checkpoint"
        super().load_checkpoint(filename_or_checkpoint)

    def _build_network_with_pretrained_encoder(self, plans_manager, configuration_manager, num_input_channels,
                                               num_output_channels, enable_deep_supervision=True):
        network = type(self).build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                        num_output_channels, enable_deep_supervision)
        if self._restoring is not None:
            self._report_restored_run()
            return network
        try:
            choice = self._pretraining or self._choose_pretraining(plans_manager, self.configuration_name,
                                                                   self.dataset_json)
            sha256 = file_sha256(choice.path)
            report = self.load_pretrained(network, choice.path, choice.expected)
        except SSLUserError as e:
            raise user_error(e) from None
        self.print_to_log_file(report.summary())
        record = {"path": choice.path, "method": report.meta.method, "sha256": sha256, "found_by": choice.found_by}
        if self.local_rank == 0:
            record = write_record(self.output_folder, choice.path, choice.found_by, report.meta, sha256,
                                  type(self).__name__)
        self.print_to_log_file(f"{record_line(record)}; recorded in {join(self.output_folder, RECORD)}")
        return network

    def _report_restored_run(self) -> None:
        """--c / --val: nnU-Net's checkpoint holds every weight; say what the run started from, look nothing up."""
        source = basename(self._restoring)
        record = read_record(self.output_folder)
        if record is None:
            self.print_to_log_file(f"weights from {source}; no pretraining loaded or looked up. This fold folder has "
                                   f"no {RECORD} (started before nnunet-ssl recorded it): which pretraining the run "
                                   "started from is in its first training log")
            return
        if source == NNUNET_CHECKPOINTS[0]:  # a finished run (--val): the pretraining is not needed at all
            self.print_to_log_file(f"weights from {source}; no pretraining loaded. The run started from "
                                   f"{record_line(record)}")
            return
        problem = record_problem(record)
        if problem is None:
            self.print_to_log_file(f"continuing from {source}; the run started from {record_line(record)}, "
                                   "unchanged (sha256 checked)")
        else:
            self.print_to_log_file(
                f"WARNING: the pretraining this run started from is no longer as {RECORD} records it: {problem}. "
                f"Training continues from {source}, which holds every weight, so the continuation is unaffected; "
                f"the record ({record_line(record)}) can no longer be checked against the file.")

    @staticmethod
    def load_pretrained(network, path: str, expected: dict | None = None):
        """What of the checkpoint goes into the network; variants override (default: the encoder). ``expected``:
        provenance.training_data_description of this run, compared with the checkpoint's."""
        return load_pretrained_encoder(network, path, expected=expected)


class SSLInitTrainer_linearWarmup(SSLInitTrainer):
    """nnssl's fine-tuning recipe: linear warm-up of the whole network over WARMUP_EPOCHS (5% of a
    length), then poly [nnssl PretrainedTrainer]. Its matched control is SSLScratchTrainer_linearWarmup."""

    LINEAR_WARMUP = True


class SSLInitTrainer_decoderFirst(SSLInitTrainer):
    """Decoder first: the encoder's learning rate is 0 for the first WARMUP_EPOCHS epochs (the random
    decoder adapts to the pretrained features), then everything trains [nnssl fork's "sawtooth"
    idea; simplified]. The encoder's gradients are still computed, which keeps DDP and
    torch.compile unchanged at the cost of some compute."""

    def encoder_lr_scale(self, epoch: int) -> float:
        return 0.0 if epoch < self.WARMUP_EPOCHS else 1.0


class SSLInitTrainer_lowEncoderLR(SSLInitTrainer):
    """The encoder trains at a tenth of the schedule's learning rate throughout [assumption: a
    common fine-tuning choice; 0.1 is not from the PCL or MLSSCL papers]."""

    ENCODER_LR_SCALE = 0.1

    def encoder_lr_scale(self, epoch: int) -> float:
        return self.ENCODER_LR_SCALE


class SSLInitTrainer_fullNetwork(SSLInitTrainer):
    """Loads encoder *and* decoder of a reconstruction pretraining (-m mae, -m models_genesis), all but the
    segmentation output layers, which start random (the load report lists both). The same schedule as
    SSLInitTrainer; a checkpoint without a decoder (contrastive methods) is refused."""

    @staticmethod
    def load_pretrained(network, path: str, expected: dict | None = None):
        return load_pretrained_network(network, path, expected=expected)


class SSLInitTrainer_freshFirstStage(SSLInitTrainer):
    """Loads the pretrained encoder except its full-resolution first stage (and a ResEnc stem), which keeps
    nnU-Net's random init; the load report lists it. Why [assumption, one diagnostic run]: after a short
    pretraining the first stage's channels were nearly redundant (mean |r| 0.6-0.7 against 0.14 at He init) and
    fine-tuning started its classes late; the same encoder with a fresh first stage did not
    (docs/methods/readouts.md). The demo's MAE arm. At the plateau length (4000 iterations, M = 5) it changed
    nothing: level with scratch and with the whole encoder loaded
    (docs/studies/hippocampus_mae_freshFirstStage_M5_2026-12-06)."""

    @staticmethod
    def load_pretrained(network, path: str, expected: dict | None = None):
        return load_pretrained_encoder(network, path, fresh_first_stage=True, expected=expected)
