"""Named training lengths, the ``_<length>`` part of a trainer name (``SSLScratchTrainer_cpu2000it``).

Every arm of a comparison at one length shares it exactly; the registry (registry.py) turns each
entry into class attributes of SizedTrainer / MatchedScheduleTrainer. Warm-up epochs (read by the
linearWarmup and decoderFirst recipes only) are about 5% of the epochs, as nnssl's 50 of 1000
[nnssl PretrainedTrainer]. CPU lengths use 25 iterations per epoch, one
validation iteration (only nnU-Net's pseudo-Dice log reads it) and, except cpu1200it, no test-time
mirroring: with it, CPU evaluation of 52 hippocampus cases takes longer than a short training.
Resumed (``--c``) runs continue the schedule at the saved epoch; only the random data stream differs.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Length:
    epochs: int
    iterations_per_epoch: int | None = None  # None: nnU-Net's 250
    val_iterations_per_epoch: int | None = None  # None: nnU-Net's 50
    warmup_epochs: int = 50  # only the linearWarmup and decoderFirst recipes read it
    test_time_mirroring: bool = True
    save_every: int | None = None  # epochs between checkpoint_latest writes; None: nnU-Net's 50
    plot_every: int | None = None  # epochs between progress.png redraws; None: every epoch (nnU-Net)

    @property
    def iterations(self) -> int:
        return self.epochs * (self.iterations_per_epoch or 250)

    def class_attributes(self) -> dict:
        return {"NUM_EPOCHS": self.epochs, "ITERATIONS_PER_EPOCH": self.iterations_per_epoch,
                "VAL_ITERATIONS_PER_EPOCH": self.val_iterations_per_epoch, "WARMUP_EPOCHS": self.warmup_epochs,
                "TEST_TIME_MIRRORING": self.test_time_mirroring, "SAVE_EVERY": self.save_every,
                "PLOT_EVERY": self.plot_every}


def _cpu(iterations: int) -> Length:
    # a checkpoint every 10 epochs (250 iterations): a CPU cell stopped with its session loses little,
    # and the benchmark continues it with nnU-Net's --c
    epochs = iterations // 25
    # progress.png is redrawn with each checkpoint: drawing every epoch cost more than the training on a GPU
    return Length(epochs, 25, 1, max(1, round(0.05 * epochs)), test_time_mirroring=False, save_every=10,
                  plot_every=10)


LENGTHS: dict[str, Length] = {
    "cpu500it": _cpu(500),  # the 2026-11-30 3d evidence matrices
    "cpu1000it": _cpu(1000),  # learning-curve point (docs/studies/hippocampus_curve_*)
    "cpuDemo": _cpu(1000),  # the demo's length on 2 CPU cores
    "cpu2000it": _cpu(2000),  # the 2d matrices; a learning-curve point
    "cpu4000it": _cpu(4000),  # the plateau on hippocampus, M = 5 (docs/studies/hippocampus_curve_gpu_2026-12-04/notes.md)
    "cpu8000it": _cpu(8000),  # the 2d plateau on hippocampus, M = 5 (hippocampus_pcl2d_plateau_M5_2026-12-06.md)
    "cpu16000it": _cpu(16000),  # the 2d learning curve's last point
    "cpu1200it": Length(48, 25, 2, 2),  # with test-time mirroring, as nnU-Net validates
    "tiny": Length(2, 2, 1, 1, test_time_mirroring=False),  # smoke tests only
}
