"""Position arithmetic for positional contrastive learning (PCL). Pure numpy/torch, no I/O.

All shapes and boxes are in nnU-Net's preprocessed axis order (after ``transpose_forward``), which
is also the order of the crop properties nnU-Net stores (shape_before_cropping,
bbox_used_for_cropping, shape_after_cropping_and_before_resampling).
"""
from typing import Callable, Sequence

import numpy as np
import torch

# Above this fraction of the position axis covered by one patch, nearly every pair is positive
# [spec 3.3 "degenerate case": refuse when h >= 0.8].
MAX_PATCH_FRACTION = 0.8


# Physical axes of ITK's LPS patient space (x: right->left, y: anterior->posterior, z: inferior->superior)
ANATOMICAL_AXES = {"LR": 0, "AP": 1, "SI": 2}


def preprocessed_axis(anatomical: str, direction: Sequence[float], transpose_forward: Sequence[int]) -> int:
    """The axis of nnU-Net's preprocessed array that runs closest to an anatomical axis.

    ``direction`` is ITK's 3x3 direction matrix (row-major, as SimpleITK returns it): column i is
    the physical direction of image index axis i. numpy arrays from SimpleITK hold the index axes in
    reverse order (z, y, x), and nnU-Net then applies ``transpose_forward``.
    """
    if anatomical not in ANATOMICAL_AXES:
        raise ValueError(f"unknown anatomical axis {anatomical!r}; use one of {sorted(ANATOMICAL_AXES)}")
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    index_axis = int(np.argmax(np.abs(matrix[ANATOMICAL_AXES[anatomical], :])))
    return list(transpose_forward).index(2 - index_axis)


def patch_centre_position(
    patch_start: float,
    patch_extent: float,
    preprocessed_extent: int,
    cropped_extent: int,
    crop_start: int,
    original_extent: int,
) -> float:
    """Normalised position in [0, 1] of a patch centre along one axis of the original image.

    The centre is measured in preprocessed voxels (voxel i covers [i, i + 1)), mapped back through
    nnU-Net's resampling (cropped_extent / preprocessed_extent) and nonzero crop (crop_start), and
    divided by the uncropped extent, as PCL normalises slice positions to the stored volume [code:
    dataset/chd.py:38]. nnU-Net pads small images, so a patch may start below 0: the result is
    clipped to [0, 1].
    """
    if min(preprocessed_extent, cropped_extent, original_extent) <= 0:
        raise ValueError("extents must be positive")
    centre = patch_start + patch_extent / 2.0
    centre_original = crop_start + centre * (cropped_extent / preprocessed_extent)
    return float(np.clip(centre_original / original_extent, 0.0, 1.0))


def position_from_properties(properties: dict, preprocessed_shape: Sequence[int], patch_start: Sequence[int],
                             patch_size: Sequence[int], axis: int) -> float:
    """``patch_centre_position`` with the numbers read from an nnU-Net case properties dict."""
    return patch_centre_position(
        patch_start=patch_start[axis],
        patch_extent=patch_size[axis],
        preprocessed_extent=preprocessed_shape[axis],
        cropped_extent=properties["shape_after_cropping_and_before_resampling"][axis],
        crop_start=properties["bbox_used_for_cropping"][axis][0],
        original_extent=properties["shape_before_cropping"][axis],
    )


def slice_position(slice_index: int, crop_start: int, original_extent: int) -> float:
    """PCL's slice label ``p = (z_orig + 1) / Z_orig`` in (0, 1] [code: dataset/chd.py:38, acdc.py:32].

    ``slice_index`` z is the index along axis 0 of nnU-Net's preprocessed (cropped) volume,
    ``crop_start`` the first index of nnU-Net's nonzero crop on that axis and ``original_extent``
    the uncropped number of slices, so z_orig = crop_start + z and Z_orig = original_extent: the
    position relative to the stored volume, as the reference computes it [spec 3.2]. Only valid
    where axis 0 is not resampled, i.e. in nnU-Net's ``2d`` configuration.
    """
    z_orig = int(crop_start) + int(slice_index)
    if original_extent <= 0:
        raise ValueError(f"the number of slices must be positive, got {original_extent}")
    if not 0 <= z_orig < original_extent:
        raise ValueError(f"slice {slice_index} + crop start {crop_start} lies outside the {original_extent} "
                         "slices of the uncropped image")
    return (z_orig + 1) / float(original_extent)


def slice_position_from_properties(properties: dict, slice_index: int) -> float:
    """``slice_position`` with the crop start and uncropped extent of axis 0 read from an nnU-Net
    case properties dict (``bbox_used_for_cropping[0][0]``, ``shape_before_cropping[0]``)."""
    return slice_position(slice_index, properties["bbox_used_for_cropping"][0][0],
                          properties["shape_before_cropping"][0])


def patch_fraction(patch_extent: int, image_extents: Sequence[int]) -> float:
    """h: the fraction of the position axis one patch covers (median over cases)."""
    return float(min(1.0, patch_extent / np.median(np.asarray(image_extents, dtype=float))))


def rescaled_threshold(theta: float, fraction: float) -> float:
    """theta' = theta * (1 - h): patch centres only span [h/2, 1 - h/2], so the threshold shrinks
    with the span to keep PCL's positive rate [spec 3.3, assumption]."""
    if not 0 <= fraction < 1:
        raise ValueError(f"patch fraction must be in [0, 1), got {fraction}")
    return theta * (1.0 - fraction)


def positional_positive_mask(positions: torch.Tensor, threshold: float,
                             others: torch.Tensor | None = None) -> torch.Tensor:
    """PCL positives: |p_i - p_j| < threshold, also across patients [code: loss/contrast_loss.py:61].

    positions: (N,) -> (N, N) bool (the diagonal is True; the loss ignores it), or (N, M) against
    ``others`` (M,), e.g. the positions stored in a memory queue.
    """
    others = positions if others is None else others
    if positions.ndim != 1 or others.ndim != 1:
        raise ValueError(f"positions must be 1-D, got shapes {tuple(positions.shape)}, {tuple(others.shape)}")
    return (positions[:, None] - others[None, :]).abs() < threshold


def same_sample_mask(sample_ids: torch.Tensor) -> torch.Tensor:
    """SimCLR positives: only the other views of the same sample. sample_ids: (N,) per embedding."""
    return sample_ids[:, None] == sample_ids[None, :]


def partition_labels(positions: torch.Tensor, num_partitions: int = 4) -> torch.Tensor:
    """GCL's partition of the position axis into equal parts [code: dataset/chd.py:39-44 uses
    min(i // round(N/4), 3) on slice indices; on continuous positions: min(floor(p * 4), 3)]."""
    return torch.clamp((positions * num_partitions).floor().long(), max=num_partitions - 1)


def partition_positive_mask(positions: torch.Tensor, num_partitions: int = 4,
                            others: torch.Tensor | None = None) -> torch.Tensor:
    """GCL positives (Chaitanya et al. 2020, global strategy as in PCL's baselines): same partition."""
    labels = partition_labels(positions, num_partitions)
    other_labels = labels if others is None else partition_labels(others, num_partitions)
    return labels[:, None] == other_labels[None, :]


def random_patch_start(image_shape: Sequence[int], patch_size: Sequence[int],
                       randint: Callable[[int, int], int] = np.random.randint) -> list[int]:
    """Uniform patch start per axis, like nnU-Net's random (non-foreground) crop.

    Where the image is smaller than the patch, the patch may start below 0 (padding is split
    over both sides, as nnUNetDataLoader.get_bbox does with need_to_pad). Uses numpy's global
    generator by default because batchgenerators reseeds it in each augmentation worker.
    """
    starts = []
    for extent, size in zip(image_shape, patch_size):
        pad = max(size - extent, 0)
        low = -((pad + 1) // 2)  # nnU-Net: lbs = -need_to_pad // 2 (floor division of a negative)
        high = extent + pad // 2 + pad % 2 - size
        starts.append(int(randint(low, high + 1)))
    return starts


def crop_around_patch(patch_start: Sequence[int], patch_size: Sequence[int],
                      crop_size: Sequence[int]) -> list[list[int]]:
    """Bounding box [[lo, hi], ...] of a larger crop sharing the patch's centre (crop - patch is
    even on every axis), so a centre-cropping spatial transform returns exactly that patch's centre."""
    box = []
    for start, size, crop in zip(patch_start, patch_size, crop_size):
        margin = (crop - size) // 2
        if margin < 0 or (crop - size) % 2:
            raise ValueError(f"crop {list(crop_size)} must exceed patch {list(patch_size)} by an even amount")
        box.append([start - margin, start - margin + crop])
    return box


def rotation_safe_crop_size(patch_size: Sequence[int], rotation_axis: int, min_scale: float) -> list[int]:
    """Crop that still fills ``patch_size`` after any rotation about ``rotation_axis`` and zoom
    down to ``min_scale``: the in-plane diagonal, divided by the scale, rounded up to keep
    (crop - patch) even."""
    in_plane = [s for a, s in enumerate(patch_size) if a != rotation_axis]
    diagonal = float(np.sqrt(np.sum(np.square(in_plane))))
    crop = []
    for a, size in enumerate(patch_size):
        needed = int(np.ceil((size if a == rotation_axis else diagonal) / min_scale))
        crop.append(needed + (needed - size) % 2)
    return crop


def pretraining_patch_size(plans_patch_size: Sequence[int], divisors: Sequence[int], median_shape: Sequence[float],
                           axis: int, max_fraction: float = 0.5) -> list[int]:
    """The plans' patch, shortened along the position axis to at most ``max_fraction`` of the
    median image extent (a multiple of the network's total stride on that axis, at least one).

    nnU-Net often plans patches that cover most of an image; PCL positions then barely vary and
    every pair is positive [spec 3.3]. The encoder is fully convolutional with global pooling, so
    weights learned on shorter patches transfer to the plans' patch (assumption, spec 3.3).
    """
    size = [int(s) for s in plans_patch_size]
    div = int(divisors[axis])
    limit = max(div, int(max_fraction * median_shape[axis]) // div * div)
    size[axis] = min(size[axis], limit)
    return size


def largest_useful_patch(divisors: Sequence[int], image_shapes: Sequence[Sequence[int]],
                         plans_patch_size: Sequence[int]) -> list[int]:
    """The longest patch edge per axis that still sees image: the longest edge of any case (any axis,
    since clip methods turn volumes) or the plans' patch when that is longer, rounded up to the
    network's stride. Beyond it a patch is only padding, and memory grows with its volume."""
    longest = max(max(int(s) for s in shape) for shape in image_shapes)
    return [max(int(p), -(-longest // int(d)) * int(d)) for p, d in zip(plans_patch_size, divisors)]


# nnU-Net's encoders normalise with InstanceNorm, over each feature map's voxels: in training torch refuses a
# map of one voxel ("Expected more than 1 spatial element"). A patch of one total stride per axis reaches the
# bottleneck as 1 voxel [measured: --patch-size 8 8 4 against strides 8x8x4 crashed pcl, mae and mlsscl in
# their first step; 8 8 8 and 16 8 4 (2 bottleneck voxels) trained every method]
MIN_BOTTLENECK_VOXELS = 2


def bottleneck_shape(patch_size: Sequence[int], divisors: Sequence[int]) -> list[int]:
    """What a patch becomes after all of the network's poolings (``divisors``: total stride per axis)."""
    return [int(p) // int(d) for p, d in zip(patch_size, divisors)]


def smallest_trainable_patch(divisors: Sequence[int]) -> list[int]:
    """A smallest patch the planned network trains on: one total stride per axis, the first doubled."""
    return [int(d) * (MIN_BOTTLENECK_VOXELS if i == 0 else 1) for i, d in enumerate(divisors)]


def too_small_patch_problem(patch_size: Sequence[int], divisors: Sequence[int]) -> str | None:
    """Why the network cannot train on ``patch_size`` (its bottleneck keeps fewer than
    MIN_BOTTLENECK_VOXELS voxels), or None."""
    shape = bottleneck_shape(patch_size, divisors)
    if int(np.prod(shape)) >= MIN_BOTTLENECK_VOXELS:
        return None
    return (f"patch {list(map(int, patch_size))} reaches the network's bottleneck as {'x'.join(map(str, shape))} "
            f"voxel(s) (total strides {list(map(int, divisors))}); its InstanceNorm needs at least "
            f"{MIN_BOTTLENECK_VOXELS} voxels there, so the first training step would crash. The smallest patches "
            f"hold {MIN_BOTTLENECK_VOXELS * int(np.prod(divisors))} voxels, e.g. {smallest_trainable_patch(divisors)}")
