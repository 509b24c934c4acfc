"""SSLInitTrainer and its matched from-scratch control: same schedule, only the init differs."""
import numpy as np
import torch
from nnunetv2.training.lr_scheduler.warmup import Lin_incr_LRScheduler, PolyLRScheduler_offset
from nnunetv2.training.nnUNetTrainer.variants.lr_schedule.nnUNetTrainer_warmup import nnUNetTrainer_warmup

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.encoder import comparable_description
from nnunet_ssl.integration.encoder_loader import load_pretrained_encoder, load_pretrained_network, unwrap
from nnunet_ssl.integration.locations import find_pretrained_checkpoint
from nnunet_ssl.integration.trainers.sized import SizedTrainer


class MatchedScheduleTrainer(SizedTrainer, nnUNetTrainer_warmup):
    """The schedule every arm of a comparison shares: by default stock nnU-Net's (SGD, momentum 0.99,
    Nesterov, poly decay from lr 1e-2, no warm-up), so that matched scratch *is* nnU-Net's trainer.
    ``LINEAR_WARMUP`` adds nnssl's linear warm-up of the whole network over ``WARMUP_EPOCHS`` first,
    through nnU-Net's own nnUNetTrainer_warmup (the ``linearWarmup`` recipe).

    Why no warm-up by default: on hippocampus (M = 5, folds 6/9/12, 2000 iterations) the warm-up
    schedule scored 0.750 +- 0.046 foreground Dice against 0.807 +- 0.021 and 0.797 +- 0.039 in two
    runs of the stock schedule, lower on 3 of 3 folds against each; the two stock runs differed by
    +0.010 [-0.005, +0.034] (docs/benchmarks/hippocampus_curve_2026-12-04.md).

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


class SSLInitTrainer(MatchedScheduleTrainer):
    """Fine-tunes from a pretrained encoder (nnUNetv2_ssl_pretrain).

    The encoder is loaded into ``network.encoder`` right after nnU-Net builds the network inside
    initialize(), before torch.compile and DDP wrap it. The checkpoint is the finished pretraining
    for this dataset, plans and configuration; ``nnUNet_ssl_method`` picks one when several exist
    and ``nnUNet_ssl_weights`` names a file directly. The decoder keeps its random init.
    """

    PRETRAINING_METHOD: str | None = None  # variants may pin a method

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # initialize() calls self.build_network_architecture(...) and compiles right after; shadowing
        # it on the instance is the one hook between the two. Inference calls the static method on
        # the class and so builds the plain network.
        self.build_network_architecture = self._build_network_with_pretrained_encoder

    def _build_network_with_pretrained_encoder(self, plans_manager, configuration_manager, num_input_channels,
                                               num_output_channels, enable_deep_supervision=True):
        network = type(self).build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                        num_output_channels, enable_deep_supervision)
        try:
            path = find_pretrained_checkpoint(plans_manager.dataset_name, plans_manager.plans_name,
                                              self.configuration_name, self.PRETRAINING_METHOD)
            report = self.load_pretrained(network, path, comparable_description(configuration_manager))
        except SSLUserError as e:
            raise SystemExit(f"\nnnunet-ssl error: {e.problem}" + (f"\n  Fix: {e.fix}" if e.fix else "")) from None
        self.print_to_log_file(report.summary())
        return network

    @staticmethod
    def load_pretrained(network, path: str, architecture: dict | None = None):
        """What of the checkpoint goes into the network; variants override (default: the encoder)."""
        return load_pretrained_encoder(network, path, architecture)


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
    def load_pretrained(network, path: str, architecture: dict | None = None):
        return load_pretrained_network(network, path, architecture)


class SSLInitTrainer_freshFirstStage(SSLInitTrainer):
    """Loads the pretrained encoder except its full-resolution first stage (and a ResEnc stem), which keeps
    nnU-Net's random init; the load report lists it. Why [assumption, one diagnostic run]: after a short
    pretraining the first stage's channels were nearly redundant (mean |r| 0.6-0.7 against 0.14 at He init) and
    fine-tuning started its classes late; the same encoder with a fresh first stage did not
    (docs/methods/readouts.md). The demo's MAE arm. At the plateau length (4000 iterations, M = 5) it changed
    nothing: level with scratch and with the whole encoder loaded (docs/benchmarks)."""

    @staticmethod
    def load_pretrained(network, path: str, architecture: dict | None = None):
        return load_pretrained_encoder(network, path, architecture, fresh_first_stage=True)
