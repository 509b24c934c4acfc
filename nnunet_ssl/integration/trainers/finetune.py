"""SSLInitTrainer and its matched from-scratch control: same schedule, only the init differs."""
import torch
from nnunetv2.training.nnUNetTrainer.variants.lr_schedule.nnUNetTrainer_warmup import nnUNetTrainer_warmup

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.integration.encoder_loader import load_pretrained_encoder
from nnunet_ssl.integration.locations import find_pretrained_checkpoint


class WarmupPolyTrainer(nnUNetTrainer_warmup):
    """Linear warm-up of the whole network, then poly decay: nnssl's fine-tuning recipe, built on
    nnU-Net's own nnUNetTrainer_warmup (SGD, momentum 0.99, Nesterov, lr 1e-2).

    Training length lives in class attributes so that variants are two lines each
    (see lengths.py); ``None`` keeps nnU-Net's value.
    """

    NUM_EPOCHS: int = 1000  # [nnU-Net]
    ITERATIONS_PER_EPOCH: int | None = None  # 250 [nnU-Net]
    VAL_ITERATIONS_PER_EPOCH: int | None = None  # 50 [nnU-Net]
    WARMUP_EPOCHS: int = 50  # [nnssl PretrainedTrainer: 50 of 1000 epochs]
    TEST_TIME_MIRRORING: bool = True  # False: validation/prediction without mirroring (8x faster on CPU)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.NUM_EPOCHS
        self.warmup_duration_whole_net = self.WARMUP_EPOCHS
        if self.ITERATIONS_PER_EPOCH is not None:
            self.num_iterations_per_epoch = self.ITERATIONS_PER_EPOCH
        if self.VAL_ITERATIONS_PER_EPOCH is not None:
            self.num_val_iterations_per_epoch = self.VAL_ITERATIONS_PER_EPOCH

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        result = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.TEST_TIME_MIRRORING:  # training still mirrors; only inference skips it
            self.inference_allowed_mirroring_axes = None
        return result


class SSLScratchTrainer(WarmupPolyTrainer):
    """Random initialisation with exactly SSLInitTrainer's schedule: the control that isolates
    the effect of pretraining."""


class SSLInitTrainer(WarmupPolyTrainer):
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
            report = load_pretrained_encoder(network, path)
        except SSLUserError as e:
            raise SystemExit(f"\nnnunet-ssl error: {e.problem}" + (f"\n  Fix: {e.fix}" if e.fix else "")) from None
        self.print_to_log_file(report.summary())
        return network
