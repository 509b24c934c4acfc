"""Clip geometry for MLSSCL: anatomical view axes, strided clips, and their sizes. Pure numpy, no I/O.

A *clip* is C slices taken along one anatomical axis at a stride, cut to an in-plane window and
stacked into a 3D array, the spatial analogue of a video clip [poster, spec 2.3]. MLSSCL samples an
axial, a coronal and a sagittal *long* clip (stride δL) and a *short* axial clip (stride δS < δL)
inside the long axial one. Every clip is permuted so that its slice axis becomes array axis 0 (the
first network axis) and its in-plane axes axes 1 and 2, in a fixed anatomical order, so the network
always sees "slices x rows x columns" whatever the view and whatever the array order of the case.

All shapes and axis numbers are in nnU-Net's preprocessed axis order (after ``transpose_forward``).
"""
import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from nnunet_ssl.data.positions import ANATOMICAL_AXES, preprocessed_axis
from nnunet_ssl.errors import SSLUserError

VIEWS = ("axial", "coronal", "sagittal")
# the anatomical axis each view's slices are stacked along (axial slices follow the SI axis, ...)
SLICE_AXIS = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}
# in-plane axes, in the order they take on network axes 1 and 2 (the radiological rows x columns)
IN_PLANE_AXES = {"axial": ("AP", "LR"), "coronal": ("SI", "LR"), "sagittal": ("SI", "AP")}
# without an image direction, preprocessed array axes 0, 1, 2 are taken as SI, AP, LR
ARRAY_ORDER_AXES = {"SI": 0, "AP": 1, "LR": 2}
PREFERRED_NUM_SLICES = 16  # C [spec 2.3, assumption]; the poster gives no number


def anatomical_array_axes(direction: Sequence[float] | None,
                          transpose_forward: Sequence[int] | None) -> dict[str, int]:
    """The preprocessed array axis of each anatomical axis, ``{"SI": i, "AP": j, "LR": k}``.

    Uses ``positions.preprocessed_axis`` (ITK direction + nnU-Net's transpose) per anatomical axis.
    If an oblique direction sends two anatomical axes to the same array axis, the permutation of
    array axes best aligned with the anatomy (largest sum of |direction cosines|) is taken instead.
    Without a direction (or transpose) the array order is assumed: ``ARRAY_ORDER_AXES``.
    """
    if direction is None or transpose_forward is None:
        return dict(ARRAY_ORDER_AXES)
    axes = {name: preprocessed_axis(name, direction, transpose_forward) for name in ANATOMICAL_AXES}
    if len(set(axes.values())) == 3:
        return axes
    matrix = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))
    names = list(ANATOMICAL_AXES)
    # ITK index axis j is numpy axis 2 - j, which nnU-Net moves to transpose_forward.index(2 - j)
    best = max(itertools.permutations(range(3)),
               key=lambda index_axes: sum(matrix[ANATOMICAL_AXES[n], j] for n, j in zip(names, index_axes)))
    return {n: list(transpose_forward).index(2 - j) for n, j in zip(names, best)}


def view_permutation(axes: dict[str, int], view: str) -> tuple[int, int, int]:
    """Array axes of a view in network order: (slice axis, in-plane axis 1, in-plane axis 2)."""
    first, second = IN_PLANE_AXES[view]
    return axes[SLICE_AXIS[view]], axes[first], axes[second]


def clip_span(num_slices: int, stride: int) -> int:
    """Voxels covered along the slice axis by ``num_slices`` slices at ``stride``: (C - 1) * δ + 1."""
    return (num_slices - 1) * stride + 1


@dataclass(frozen=True)
class Clip:
    """Where a clip lies in a volume. ``axes`` are array axes in network order (slice, in-plane 1,
    in-plane 2); ``start`` the first voxel along each of them; slices are ``start[0] + stride * i``."""
    axes: tuple[int, int, int]
    start: tuple[int, int, int]
    stride: int
    num_slices: int
    in_plane: tuple[int, int]

    @property
    def span(self) -> int:
        return clip_span(self.num_slices, self.stride)

    def slice_indices(self) -> np.ndarray:
        return self.start[0] + self.stride * np.arange(self.num_slices)

    def bounding_box(self) -> list[list[int]]:
        """[[lo, hi], ...] per array axis (0, 1, 2) of the region the clip reads."""
        sizes = (self.span, *self.in_plane)
        box: list[list[int]] = [[0, 0]] * 3
        for axis, start, size in zip(self.axes, self.start, sizes):
            box[axis] = [start, start + size]
        return box


def view_extents(shape: Sequence[int], axes: dict[str, int], view: str) -> tuple[int, int, int]:
    """A case's extents in a view's network order: (slice axis, in-plane 1, in-plane 2)."""
    return tuple(int(shape[a]) for a in view_permutation(axes, view))


def misfits(shape: Sequence[int], axes: dict[str, int], num_slices: int, long_stride: int,
            in_plane: Sequence[int]) -> list[str]:
    """What a case lacks for the long clips of every view: [] when all three fit inside it."""
    needed = (clip_span(num_slices, long_stride), *in_plane)
    problems = []
    for view in VIEWS:
        have = view_extents(shape, axes, view)
        if any(h < n for h, n in zip(have, needed)):
            problems.append(f"{view} clip needs {'x'.join(map(str, needed))} voxels (slices x in-plane), "
                            f"the case has {'x'.join(map(str, have))}")
    return problems


def sample_clip(shape: Sequence[int], axes: dict[str, int], view: str, num_slices: int, stride: int,
                in_plane: Sequence[int], randint: Callable[[int, int], int] = np.random.randint) -> Clip:
    """A clip of ``view`` at a uniformly random position entirely inside a volume of ``shape``.

    Clips are never padded (see ``MLSSCL``'s docs: padding would tell the network each case's size).
    Uses numpy's global generator by default, which batchgenerators reseeds in each worker.
    """
    order = view_permutation(axes, view)
    sizes = (clip_span(num_slices, stride), *[int(s) for s in in_plane])
    starts = []
    for axis, size in zip(order, sizes):
        room = int(shape[axis]) - size
        if room < 0:
            raise ValueError(f"a {view} clip of {sizes} voxels does not fit a volume of shape {tuple(shape)}")
        starts.append(int(randint(0, room + 1)))
    return Clip(order, tuple(starts), stride, num_slices, (sizes[1], sizes[2]))


def sample_short_clip(long: Clip, stride: int,
                      randint: Callable[[int, int], int] = np.random.randint) -> Clip:
    """A clip with ``long``'s slice count, axes and in-plane window and a smaller stride, whose
    slices all lie inside the long clip's span: it sees a denser, shorter piece of the same region
    (the short clip is matched to the long axial clip [poster]; lying inside it is [spec 2.3,
    assumption], as in LSTCL)."""
    if not 1 <= stride < long.stride:
        raise ValueError(f"the short stride must be in [1, {long.stride}), got {stride}")
    room = long.span - clip_span(long.num_slices, stride)
    first = long.start[0] + int(randint(0, room + 1))
    return Clip(long.axes, (first, *long.start[1:]), stride, long.num_slices, long.in_plane)


def extract_clip(volume, clip: Clip) -> np.ndarray:
    """(c, *shape) array (numpy or nnU-Net's blosc2) -> (c, C, H, W) float32 numpy array."""
    box = clip.bounding_box()
    for (lo, hi), extent in zip(box, volume.shape[1:]):
        if lo < 0 or hi > extent:
            raise ValueError(f"clip box {box} leaves a volume of shape {tuple(volume.shape[1:])}")
    region = np.asarray(volume[(slice(None), *[slice(lo, hi) for lo, hi in box])])
    region = region.transpose(0, *[a + 1 for a in clip.axes])
    return np.ascontiguousarray(region[:, ::clip.stride], dtype=np.float32)


def auto_num_slices(divisor: int, long_stride: int, min_extent: int,
                    preferred: int = PREFERRED_NUM_SLICES) -> int | None:
    """C: the largest multiple of the network's stride along the slice axis that is at most
    ``max(preferred, divisor)`` and whose long clip still fits ``min_extent``; None if none fits."""
    c = max(preferred // divisor, 1) * divisor
    while c >= max(divisor, 2) and clip_span(c, long_stride) > min_extent:
        c -= divisor
    return c if c >= max(divisor, 2) else None


def auto_in_plane(plans_sizes: Sequence[int], divisors: Sequence[int], min_extents: Sequence[int]) -> list[int]:
    """In-plane window per network axis: the plans' patch there, shrunk to the smallest in-plane
    extent any view of any case offers, rounded down to a multiple of the network stride (0 when
    not even one stride fits)."""
    return [int(min(p, e) // d * d) for p, e, d in zip(plans_sizes, min_extents, divisors)]


def plan_clip_shape(image_shapes: Sequence[Sequence[int]], case_axes: Sequence[dict[str, int]],
                    divisors: Sequence[int], plans_patch_size: Sequence[int], num_slices: int | None,
                    in_plane: Sequence[int] | None, long_stride: int, short_stride: int,
                    requested: Sequence[int] | None = None) -> list[int]:
    """MLSSCL's clip shape [C, H, W]: C and the in-plane window requested (options or --patch-size) or
    automatic, multiples of the network's strides, and every long clip of every case inside the volume
    (clips are never padded: padding would tell the network each case's size, a shortcut for matching the
    views of one case). A clear SSLUserError names the fix when nothing fits."""
    divisors = [int(d) for d in divisors]
    extents = [view_extents(shape, axes, view) for shape, axes in zip(image_shapes, case_axes) for view in VIEWS]
    min_slices = min(e[0] for e in extents)
    min_plane = [min(e[i] for e in extents) for i in (1, 2)]
    if requested is not None:
        if (num_slices is not None and num_slices != requested[0]) or \
                (in_plane is not None and list(in_plane) != list(requested[1:])):
            raise SSLUserError(f"--patch-size {list(requested)} disagrees with num_slices = {num_slices}, "
                               f"in_plane_size = {in_plane}.", "give the clip size one way only")
        num_slices, in_plane = int(requested[0]), [int(s) for s in requested[1:]]
    stride_hint = (f"a smaller long_stride (>= {short_stride + 1}), num_slices or in_plane_size, or leave "
                   "out the cases that are too small")
    if num_slices is None:
        num_slices = auto_num_slices(divisors[0], long_stride, min_slices)
        if num_slices is None:
            fewest = max(divisors[0], 2)
            fitting = (min_slices - 1) // (fewest - 1)  # the largest δL at which that many slices fit
            raise SSLUserError(
                f"the smallest case is only {min_slices} voxels long along one of its view axes; even "
                f"{fewest} slices at stride {long_stride} span "
                f"{clip_span(fewest, long_stride)} voxels.",
                f"use {stride_hint}" + (f" (long_stride={fitting} fits)" if fitting > short_stride
                                        else ""))
    elif num_slices % divisors[0]:
        raise SSLUserError(f"num_slices = {num_slices} is not a multiple of the network's total stride along "
                           f"the slice axis ({divisors[0]}).",
                           f"use a multiple of {divisors[0]}, or leave num_slices unset")
    if in_plane is None:
        in_plane = auto_in_plane(plans_patch_size[1:], divisors[1:], min_plane)
        if min(in_plane) == 0:
            raise SSLUserError(f"the smallest in-plane extent of a view is {min_plane} voxels, less than the "
                               f"network's total stride {divisors[1:]}.",
                               "leave out the cases that are too small")
    elif any(s % d for s, d in zip(in_plane, divisors[1:])):
        raise SSLUserError(f"in_plane_size = {list(in_plane)} is not a multiple of the network's total "
                           f"strides {divisors[1:]}.",
                           f"use multiples of {divisors[1:]}, or leave in_plane_size unset")
    clip_shape = [int(num_slices), *[int(s) for s in in_plane]]
    too_small = [(i, shape, problems)
                 for i, (shape, axes) in enumerate(zip(image_shapes, case_axes))
                 if (problems := misfits(shape, axes, num_slices, long_stride, in_plane))]
    if too_small:
        i, shape, problems = too_small[0]
        fitting = (min_slices - 1) // (num_slices - 1)  # the largest δL whose long clips fit every case
        fits = short_stride < fitting < long_stride
        hint = f" (long_stride={fitting} fits the slices)" if fits else ""
        raise SSLUserError(
            f"{len(too_small)} of {len(image_shapes)} cases are too small for clips of "
            f"{num_slices} slices at stride {long_stride} ({clip_span(num_slices, long_stride)} "
            f"voxels) x {list(in_plane)} in-plane; e.g. case #{i} of shape {list(shape)}: {problems[0]}.",
            f"use {stride_hint}{hint}")
    return clip_shape
