"""What every trainer of this plugin adds to an nnU-Net trainer: a length from class attributes and
CPU settings that let two jobs share a small machine. Nothing here changes what is learned."""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ssl.integration.device import requested_threads


class SizedTrainer:
    """Mixin before an nnU-Net trainer class. ``None`` keeps the trainer's own value; lengths.py
    holds the named lengths (``_cpu2000it`` ...) that the registry turns into variants."""

    NUM_EPOCHS: int | None = None  # 1000 [nnU-Net]
    ITERATIONS_PER_EPOCH: int | None = None  # 250 [nnU-Net]
    VAL_ITERATIONS_PER_EPOCH: int | None = None  # 50 [nnU-Net]
    TEST_TIME_MIRRORING: bool = True  # False: validation/prediction without mirroring (8x faster on CPU)
    SAVE_EVERY: int | None = None  # epochs between checkpoint_latest.pth writes; None: nnU-Net's 50
    # epochs between progress.png redraws (always at the last epoch); None: every epoch, as nnU-Net. The
    # plot of all epochs so far took 1.2-1.6 s at 320 epochs, against 0.7 s of GPU training per
    # 25-iteration epoch (docs/studies/hippocampus_curve_gpu_2026-12-04/notes.md)
    PLOT_EVERY: int | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.device.type == "cpu":
            # denormal floats make CPU arithmetic orders of magnitude slower; measured here: a PCL-
            # initialised fine-tuning slowed from 9 s to over 3 minutes per epoch without this
            torch.set_flush_denormal(True)
            threads = requested_threads()  # nnUNetv2_train has set one per core; an explicit value wins
            if threads is not None:
                torch.set_num_threads(threads)
        for attribute, field in (("NUM_EPOCHS", "num_epochs"), ("ITERATIONS_PER_EPOCH", "num_iterations_per_epoch"),
                                 ("VAL_ITERATIONS_PER_EPOCH", "num_val_iterations_per_epoch"),
                                 ("SAVE_EVERY", "save_every")):
            if getattr(self, attribute) is not None:
                setattr(self, field, getattr(self, attribute))
        if self.PLOT_EVERY is not None:
            draw = self.logger.plot_progress_png  # nnUNetTrainer.on_epoch_end calls it every epoch
            self.logger.plot_progress_png = lambda folder: draw(folder) if plots_at(
                self.current_epoch, self.num_epochs, self.PLOT_EVERY) else None

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        result = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.TEST_TIME_MIRRORING:  # training still mirrors; only inference skips it
            self.inference_allowed_mirroring_axes = None
        return result


def plots_at(epoch: int, num_epochs: int, every: int) -> bool:
    """Whether epoch ``epoch`` (0-based, as nnU-Net counts) redraws progress.png: every ``every``-th
    and the last."""
    return (epoch + 1) % every == 0 or epoch + 1 >= num_epochs


class nnUNetStockTrainer(SizedTrainer, nnUNetTrainer):
    """nnU-Net's own ``nnUNetTrainer`` (poly schedule from lr 1e-2, no warm-up, random init) at one of
    our lengths: the stock arm of a benchmark (``nnUNetTrainer_cpu2000it``), which tells whether the
    matched scratch control's warm-up + poly schedule is handicapped. Only the length, the CPU
    threads and, for CPU lengths, test-time mirroring differ from ``nnUNetTrainer``."""
