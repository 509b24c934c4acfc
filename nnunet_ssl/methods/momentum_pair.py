"""What MoCo and BYOL share: an online encoder + projection head, its momentum copy (the target), and two
augmented 3D views of one patch per sample. Each method file keeps its own loss and momentum rule.
"""
from dataclasses import dataclass

from torch import nn

from nnunet_ssl.blocks.heads import ProjectionHead
from nnunet_ssl.blocks.momentum import make_momentum_copy, update_momentum
from nnunet_ssl.data.views import instance_view_sampler
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.methods.base import DataGeometry, PretrainingMethod, ReadoutConfig


@dataclass(frozen=True)
class MomentumPairConfig(ReadoutConfig):  # readout: ReadoutConfig's prenorm
    """The projection head's sizes; the defaults are each method's own (its config overrides them)."""
    projection_dim: int = 128
    hidden_dim: int = 2048
    # a batch-level norm in the heads [assumption for MoCo (v2 has none): nnU-Net's InstanceNorm encoders need
    # it or contrastive training stalls, measured for PCL in docs/methods/pcl.md; BYOL's paper has it]
    head_batch_norm: bool = True


class MomentumPairMethod(PretrainingMethod):
    """Online branch = encoder + projector; ``self.target`` is its momentum copy, a child module (so
    state_dict holds it for resume) whose requires_grad is off, so SGD never changes it."""

    def __init__(self, encoder, bottleneck_channels: int, config: MomentumPairConfig, geometry: DataGeometry):
        super().__init__(encoder, bottleneck_channels, config)
        self.patch_size = [int(s) for s in (geometry.requested_patch_size or geometry.plans_patch_size)]
        self.projector = ProjectionHead(self.feature_dim, config.hidden_dim, config.projection_dim,
                                        config.head_batch_norm)
        self.target = make_momentum_copy(self._online_branch())

    def _online_branch(self) -> nn.ModuleDict:
        return nn.ModuleDict({"encoder": self.encoder, "projector": self.projector})

    def encoder_loaded(self) -> None:
        update_momentum(self._online_branch(), self.target, 0.0)  # m = 0 copies: the target starts equal

    def target_projection(self, images):
        return self.target["projector"](self.pooled_features(images, encoder=self.target["encoder"]))

    def derived_values(self) -> dict:
        return {**super().derived_values(), "patch_size": self.patch_size}

    def make_sampler(self, cases, case_ids: list[str], batch_size: int):
        if len(self.patch_size) != 3:
            raise SSLUserError(f"{self.name} makes 3D views, but the patch is {self.patch_size}.", "use -c 3d_fullres")
        if batch_size < 2:
            raise SSLUserError(f"{self.name} needs at least 2 patches per step (BatchNorm in the heads), got "
                               f"{batch_size}.", "use --batch-size 2 or more")
        return instance_view_sampler(cases, case_ids, batch_size, self.patch_size)
