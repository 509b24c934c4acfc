"""PCL: positional contrastive learning (Zeng et al., MICCAI 2021), on nnU-Net patches.

Positives are patches whose normalised position along one axis differs by less than a threshold,
also across patients; the loss is SupCon over globally pooled, projected bottleneck features.
3D patches are an adaptation [spec 3.3]: position = patch centre, threshold rescaled by the patch
extent, mirroring only across the other axes. In nnU-Net's ``2d`` configuration it is the faithful
port [spec 3.2]: slices drawn uniformly over all slices, p = (z_orig + 1) / Z_orig, the reference's
batchgenerators v1 augmentation, theta used as given.
"""
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from nnunet_ssl.blocks.distributed import gather_with_local_grad, rank
from nnunet_ssl.blocks.health import (feature_spread, retrieval_chance, supcon_collapse_loss,
                                      top1_positive_retrieval)
from nnunet_ssl.blocks.heads import ProjectionHead
from nnunet_ssl.blocks.queue import MemoryQueue
from nnunet_ssl.blocks.supcon import SupConLoss
from nnunet_ssl.data.positions import (ANATOMICAL_AXES, MAX_PATCH_FRACTION, patch_fraction, positional_positive_mask,
                                       preprocessed_axis, pretraining_patch_size, rescaled_threshold,
                                       rotation_safe_crop_size)
from nnunet_ssl.data.sampler import TwoViewPatchSampler, TwoViewSliceSampler
from nnunet_ssl.data.views import pcl_slice_view_transform, pcl_view_transform
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.methods.base import DataGeometry, PretrainingMethod, Range, ReadoutConfig


@dataclass(frozen=True)
class PCLConfig(ReadoutConfig):
    theta: float = 0.1  # positive if |dp| < theta [code: README CHD command --slice_threshold 0.1]
    temperature: float = 0.1  # tau [code: train_contrast.py --temp 0.1]
    base_temperature: float = 0.07  # hidden loss factor tau/0.07 [code: loss/contrast_loss.py default]
    projection_dim: int = 512  # head output [code: network/unet2d.py classes=512]
    # [assumption] PCL's encoder uses BatchNorm and a norm-free bottleneck; nnU-Net's InstanceNorm
    # makes every pooled channel nearly the same for all samples, the embeddings start collapsed
    # (loss stuck at log(2B - 1), measured) and do not recover. BatchNorm in the head restores the
    # batch-level signal, as in SimCLR's head. Set False for the reference head.
    head_batch_norm: bool = True
    # preprocessed array axis, or "SI" / "AP" / "LR" resolved from each image's direction and
    # nnU-Net's transpose [spec 3.3: default transposed axis 0, the lowest resolution]
    position_axis: int | str = 0
    rescale_theta: bool = True  # theta' = theta * (1 - h) [spec 3.3, assumption]; 3D only (2d: one slice)
    max_patch_fraction: float = 0.5  # auto patch covers <= this of the position axis [assumption]; 3D only
    rotation_degrees: float = 180.0  # about the position axis: U(0, 2 pi) in-plane [code: dataset/chd.py]
    # 3D: probability of rotation and of scaling, each; 2D: of the joint elastic + rotation + scaling
    p_spatial: float = 0.67  # [code: dataset/chd.py RndTransform 0.67]
    scaling: tuple = (0.7, 1.3)  # [code: dataset/chd.py SpatialTransform scale]
    # [spec 3.3, assumption] 0 = off; else a memory of past (embedding, position) pairs that join
    # the contrast set (never as anchors), for batches too small for in-batch negatives
    queue_size: int = 0
    # [measured, hippocampus 3d, 1 seed x 60 steps, docs/methods/readouts.md] multiscale (k = 2) ended with the
    # lowest loss / collapse (0.73; prenorm 0.77, postnorm 0.77) and the best head-free retrieval of the readout
    # features (0.82; prenorm 0.81, postnorm 0.70; chance 0.21)
    readout: str = "multiscale"

    OWNER: ClassVar[str] = "pcl/simclr/gcl"
    LIMITS: ClassVar[dict] = {  # checked when built (methods/base.py)
        "theta": Range(0, 1, low_open=True, why="a difference of normalised positions in [0, 1]"),
        "temperature": Range(0, low_open=True), "base_temperature": Range(0, low_open=True),
        "projection_dim": Range(1), "max_patch_fraction": Range(0, 1, low_open=True, high_open=True),
        "rotation_degrees": Range(0, 360), "p_spatial": Range(0, 1), "scaling": Range(0, low_open=True),
        "queue_size": Range(0)}

    def check(self) -> None:  # whether an axis exists and how a name maps to it: when the data are known
        if isinstance(self.position_axis, str) and self.position_axis not in ANATOMICAL_AXES:
            self.refuse("position_axis", f"{self.position_axis!r} is no anatomical axis; a name must be one of "
                        f"{sorted(ANATOMICAL_AXES)}", "e.g. --set position_axis=SI, or an array axis like 0")
        if isinstance(self.position_axis, int) and self.position_axis < 0:
            self.refuse("position_axis", f"array axis {self.position_axis} is negative",
                        "e.g. --set position_axis=0 (the preprocessed data's first axis)")
        if len(self.scaling) != 2 or self.scaling[0] > self.scaling[1]:
            self.refuse("scaling", f"needs [smallest, largest] zoom, got {list(self.scaling)}",
                        "e.g. --set scaling=[0.7,1.3] (the default)")


def resolve_position_axis(axis: int | str, geometry: DataGeometry) -> int:
    """An integer axis as given; an anatomical name resolved per case, which must agree."""
    if isinstance(axis, int):
        return axis
    if not geometry.directions or geometry.transpose_forward is None:
        raise SSLUserError(f"position axis {axis!r} needs each image's direction, which this dataset's reader does "
                           "not record.", "pass an integer axis of the preprocessed data, e.g. --set position_axis=0")
    try:
        axes = {preprocessed_axis(axis, d, geometry.transpose_forward) for d in geometry.directions}
    except ValueError as e:
        raise SSLUserError(str(e), "e.g. --set position_axis=SI") from None
    if len(axes) > 1:
        raise SSLUserError(f"the {axis} axis lies along different array axes {sorted(axes)} in different cases.",
                           "pass an integer axis, or reorient the images consistently")
    return axes.pop()


class PCL(PretrainingMethod):
    name = "pcl"
    config_class = PCLConfig
    uses_positions = True  # the patch-extent guard and threshold rescaling apply (3D patches)

    def __init__(self, encoder, bottleneck_channels: int, config: PCLConfig, geometry: DataGeometry):
        super().__init__(encoder, bottleneck_channels, config)
        self.axis = resolve_position_axis(config.position_axis, geometry)
        self.is_2d = len(geometry.plans_patch_size) == 2  # nnU-Net's 2d configuration: the faithful port [spec 3.2]
        if self.is_2d:
            self._init_slices(geometry)
        else:
            self._init_patches(geometry)
        # GAP -> Linear(C, C) -> ReLU -> Linear(C, 512) [code: network/unet2d.py:164-185]
        # on the readout's features; hidden width = the bottleneck's channels, as the reference's Linear(C, C)
        self.projector = ProjectionHead(self.feature_dim, bottleneck_channels, config.projection_dim,
                                        config.head_batch_norm)
        self.loss = SupConLoss(config.temperature, config.base_temperature)
        self.queue = MemoryQueue(config.queue_size, config.projection_dim, position=torch.float32) \
            if config.queue_size > 0 else None

    def _init_slices(self, geometry: DataGeometry) -> None:
        """2D slices along axis 0: the slice index is the position, h is one slice, so theta is used
        as given (no rescaling, no patch-extent guard) [spec 3.2]."""
        if self.axis != 0:
            raise SSLUserError(
                f"position axis {self.config.position_axis!r} is array axis {self.axis}, but nnU-Net's 2d "
                "configuration slices along axis 0, which is PCL's position axis there.",
                "use --set position_axis=0 with -c 2d, or -c 3d_fullres for another axis")
        self.slice_counts = [int(shape[0]) for shape in geometry.image_shapes]
        self.patch_size = [int(s) for s in (geometry.requested_patch_size or geometry.plans_patch_size)]
        self.fraction = patch_fraction(1, self.slice_counts)  # one slice of the median stack
        self.threshold = self.config.theta

    def _init_patches(self, geometry: DataGeometry) -> None:
        config, axis = self.config, self.axis
        ndim = len(geometry.plans_patch_size)
        if not 0 <= axis < ndim:
            raise SSLUserError(f"position axis {axis} does not exist for {ndim}D patches.",
                               f"pass a position_axis in [0, {ndim - 1}]")
        extents = [shape[axis] for shape in geometry.image_shapes]
        self.patch_size = list(geometry.requested_patch_size or pretraining_patch_size(
            geometry.plans_patch_size, geometry.divisors, np.median(geometry.image_shapes, axis=0), axis,
            config.max_patch_fraction))
        self.fraction = patch_fraction(self.patch_size[axis], extents)
        if self.uses_positions and self.fraction >= MAX_PATCH_FRACTION:
            raise SSLUserError(
                f"the pretraining patch {self.patch_size} covers {self.fraction:.0%} of position axis {axis} "
                f"(median extent {np.median(extents):.0f} voxels): nearly every pair would be positive.",
                f"pass a shorter --patch-size along axis {axis} (a multiple of {geometry.divisors[axis]}), "
                f"or another axis with --set position_axis=N")
        self.threshold = rescaled_threshold(config.theta, self.fraction) if config.rescale_theta else config.theta

    def derived_values(self) -> dict:
        values = {**super().derived_values(), "patch_size": self.patch_size, "patch_fraction": self.fraction,
                  "effective_theta": self.threshold,
                  "position_axis": self.axis}
        if self.is_2d:
            # iterations_per_epoch = total_slices / batch_size gives the reference's epochs
            values.update(views="2d slices", position="(z_orig + 1) / Z_orig", theta_rescaled=False,
                          total_slices=int(sum(self.slice_counts)),
                          median_slices=float(np.median(self.slice_counts)))
        return values

    def make_sampler(self, cases, case_ids: list[str], batch_size: int) -> TwoViewPatchSampler | TwoViewSliceSampler:
        if self.is_2d:
            transform = pcl_slice_view_transform(self.patch_size, self.config.p_spatial, tuple(self.config.scaling),
                                                 self.config.rotation_degrees)
            return TwoViewSliceSampler(cases, case_ids, batch_size, self.patch_size, transform)
        # a larger crop around the patch, so rotation/scaling never sample outside it (as nnU-Net does)
        crop = rotation_safe_crop_size(self.patch_size, self.axis, min(self.config.scaling))
        transform = pcl_view_transform(self.patch_size, self.axis, self.config.rotation_degrees,
                                       self.config.p_spatial, tuple(self.config.scaling))
        return TwoViewPatchSampler(cases, case_ids, batch_size, self.patch_size, crop, transform,
                                   self.axis)

    def positive_mask(self, positions: torch.Tensor, sample_ids: torch.Tensor) -> torch.Tensor:
        """Per-embedding positions and sample ids (N,) -> (N, N) positives."""
        return positional_positive_mask(positions, self.threshold)

    def queue_positive_mask(self, positions: torch.Tensor, queued_positions: torch.Tensor) -> torch.Tensor:
        """(N,) batch positions x (K,) queued positions -> (N, K) positives."""
        return positional_positive_mask(positions, self.threshold, queued_positions)

    def collapsed_loss(self, global_batch_size: int) -> float:
        queued = self.queue.size if self.queue is not None else 0  # a full queue: the largest value
        return supcon_collapse_loss(2 * global_batch_size, queued, self.loss.scale)

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        images = torch.cat([batch["view1"], batch["view2"]])
        batch_size = batch["view1"].shape[0]
        positions = torch.cat([batch["positions"], batch["positions"]]).to(images.device)
        sample_ids = torch.arange(batch_size, device=images.device).repeat(2) + rank() * batch_size
        pooled = self.pooled_features(images)
        embeddings = self.projector(pooled)
        # under DDP the negatives span the global batch [code: DataParallel gathers outputs]
        embeddings, positions, sample_ids = (gather_with_local_grad(t) for t in (embeddings, positions, sample_ids))
        mask = self.positive_mask(positions, sample_ids)
        keys = None
        if self.queue is not None and self.queue.num_filled > 0:
            keys, fields = self.queue.contents()
            loss_mask = torch.cat([mask, self.queue_positive_mask(positions, fields["position"])], dim=1)
        else:
            loss_mask = mask
        loss = self.loss(embeddings, loss_mask, keys)
        if self.queue is not None:
            self.queue.enqueue(embeddings.detach(), position=positions)
        chance = retrieval_chance(mask)  # = the fraction of positive pairs
        pooled = gather_with_local_grad(pooled.detach())
        return loss, {"loss": loss.item(), "positive_fraction": chance,
                      "loss_collapse": supcon_collapse_loss(mask.shape[0], 0 if keys is None else len(keys),
                                                            self.loss.scale),
                      "top1_retrieval": top1_positive_retrieval(embeddings.detach(), mask), "top1_chance": chance,
                      # the same on the readout's features, without the head: what fine-tuning inherits
                      "top1_feature_retrieval": top1_positive_retrieval(pooled, mask),
                      "feature_spread": feature_spread(pooled)}
