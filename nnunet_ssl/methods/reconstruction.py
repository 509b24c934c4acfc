"""What reconstruction methods share: the whole planned U-Net (encoder and decoder) restores an image.

The network is the one nnU-Net plans for the dataset, built with one output channel per input channel
instead of one per class, and deep supervision off: only the full-resolution output is used. Its
decoder is saved with the encoder (``Pretrainer.save_final``), so fine-tuning may start from both
(``SSLInitTrainer_fullNetwork``). Dense convolutions throughout: no sparse (SparK) encoder.
"""
from dataclasses import dataclass
from typing import ClassVar

import torch

from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.methods.base import DataGeometry, Hyperparameters, PretrainingMethod, Range

# nnU-Net's (and nnssl's) optimiser: SGD, lr 1e-2, momentum 0.99, weight decay 3e-5 [code: nnUNetTrainer
# __init__ / configure_optimizers; the same values in nnssl's AbstractBaseTrainer]. Not Nesterov and cosine
# instead of poly decay: the pretraining loop's optimizer is shared by every method [assumption: close enough].
NNUNET_SCHEDULE = {"initial_lr": 1e-2, "momentum": 0.99, "weight_decay": 3e-5}


@dataclass(frozen=True)
class ReconstructionConfig(Hyperparameters):
    # global gradient norm limit [code: nnUNetTrainer.train_step and nnssl BaseMAETrainer.train_step,
    # clip_grad_norm_(..., 12)]; None: no clipping
    grad_clip_norm: float | None = 12.0
    # a PNG of middle slices (input, changed input, reconstruction) every this many epochs and after the
    # last one [assumption; nnssl writes image volumes every 200 of 1000 epochs]
    preview_every: int = 5

    LIMITS: ClassVar[dict] = {"grad_clip_norm": Range(0, low_open=True), "preview_every": Range(1)}


class ReconstructionMethod(PretrainingMethod):
    needs_full_network = True
    schedule_defaults = NNUNET_SCHEDULE
    config_class = ReconstructionConfig

    def __init__(self, network, bottleneck_channels: int, config: ReconstructionConfig, geometry: DataGeometry):
        super().__init__(network.encoder, bottleneck_channels, config)
        self.network = network
        if len(geometry.plans_patch_size) != 3:  # the plans' configuration: known with the data
            raise SSLUserError(f"{self.name} reconstructs 3D patches, but this configuration's patch is "
                               f"{list(geometry.plans_patch_size)} (a 2D network).", "use -c 3d_fullres")
        self.patch_size = [int(s) for s in (geometry.requested_patch_size or geometry.plans_patch_size)]
        # deep supervision off: only the full-resolution output layer is used. The lower-resolution ones
        # exist in nnU-Net's decoder either way; frozen, they are not pretended to be trained (and are not saved)
        for layer in network.decoder.seg_layers[:-1]:
            layer.requires_grad_(False)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """The network's full-resolution output: one channel per input channel, linear (no activation)."""
        output = self.network(images)
        return output[0] if isinstance(output, (list, tuple)) else output

    def derived_values(self) -> dict:
        return {"patch_size": self.patch_size, "output": "full network, one linear channel per input channel, "
                                                        "deep supervision off"}

    def gradient_clip_norm(self) -> float | None:
        return self.config.grad_clip_norm

    def wants_preview(self, epoch: int, num_epochs: int) -> bool:
        return epoch % self.config.preview_every == 0 or epoch == num_epochs
