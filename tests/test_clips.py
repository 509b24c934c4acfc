"""MLSSCL clip geometry on synthetic volumes of known orientation: every voxel holds its own physical
(LPS) coordinates, so a clip shows which anatomical axis each of its axes runs along, and at which stride."""
import itertools

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_ssl.data.clip_sampler import CLIP_KEYS, ClipSampler, clip_view_transform
from nnunet_ssl.data.clips import (ARRAY_ORDER_AXES, IN_PLANE_AXES, SLICE_AXIS, VIEWS, Clip, anatomical_array_axes,
                                   auto_in_plane, auto_num_slices, clip_span, extract_clip, misfits, sample_clip,
                                   sample_short_clip)
from nnunet_ssl.data.positions import ANATOMICAL_AXES, preprocessed_axis

SIZE = (20, 24, 28)  # ITK (x, y, z) sizes, all different so that a wrong axis shows


def coordinate_volume(permutation, transpose, flip_column=1, size=SIZE):
    """nnU-Net-preprocessed-like (3, *shape) array whose channel i is the physical LPS coordinate i
    (0: LR, 1: AP, 2: SI) of each voxel, and the ITK direction of the image it came from."""
    matrix = np.zeros((3, 3))
    for column, row in enumerate(permutation):
        matrix[row, column] = -1.0 if column == flip_column else 1.0
    image = sitk.PhysicalPointSource(sitk.sitkVectorFloat32, size=list(size), origin=[0.0] * 3, spacing=[1.0] * 3,
                                     direction=matrix.flatten().tolist())
    data = np.moveaxis(sitk.GetArrayFromImage(image), -1, 0)  # (3, z, y, x): SimpleITK reverses the axes
    return data.transpose(0, *[t + 1 for t in transpose]), image.GetDirection()  # nnU-Net's transpose_forward


def varies_only_along(channel: np.ndarray, axis: int, step: int) -> bool:
    """A (C, H, W) coordinate map changes by +-step per voxel along ``axis`` and not at all along the others."""
    for a in range(3):
        diffs = np.abs(np.diff(channel, axis=a))
        if a == axis and not np.allclose(diffs, step):
            return False
        if a != axis and not np.allclose(diffs, 0):
            return False
    return True


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("transpose", [[0, 1, 2], [2, 0, 1], [1, 2, 0]])
def test_every_view_runs_along_its_anatomical_axes_on_the_same_network_axes(permutation, transpose):
    data, direction = coordinate_volume(permutation, transpose)
    axes = anatomical_array_axes(direction, transpose)
    assert axes == {name: preprocessed_axis(name, direction, transpose) for name in ANATOMICAL_AXES}
    np.random.seed(0)
    for view in VIEWS:
        clip = extract_clip(data, sample_clip(data.shape[1:], axes, view, num_slices=4, stride=3, in_plane=(8, 12)))
        assert clip.shape == (3, 4, 8, 12) and clip.dtype == np.float32
        first, second = IN_PLANE_AXES[view]
        # slices along the view's axis at the stride, then the in-plane axes in a fixed anatomical order
        assert varies_only_along(clip[ANATOMICAL_AXES[SLICE_AXIS[view]]], axis=0, step=3)
        assert varies_only_along(clip[ANATOMICAL_AXES[first]], axis=1, step=1)
        assert varies_only_along(clip[ANATOMICAL_AXES[second]], axis=2, step=1)


def test_the_short_clip_lies_inside_the_long_axial_clip():
    data, direction = coordinate_volume((2, 0, 1), [0, 1, 2])
    axes = anatomical_array_axes(direction, [0, 1, 2])
    si = ANATOMICAL_AXES["SI"]
    np.random.seed(1)
    starts = set()
    for _ in range(50):
        long = sample_clip(data.shape[1:], axes, "axial", num_slices=5, stride=4, in_plane=(8, 8))
        short = sample_short_clip(long, stride=2)
        assert short.axes == long.axes and short.start[1:] == long.start[1:] and short.num_slices == 5
        assert long.start[0] <= short.slice_indices().min()
        assert short.slice_indices().max() <= long.slice_indices().max()
        starts.add(short.start[0] - long.start[0])
        long_clip, short_clip = extract_clip(data, long), extract_clip(data, short)
        long_si, short_si = long_clip[si][:, 0, 0], short_clip[si][:, 0, 0]
        assert min(long_si) <= min(short_si) and max(short_si) <= max(long_si)  # inside the long clip's span
        assert np.allclose(np.abs(np.diff(short_si)), 2)  # denser: stride δS
        others = [a for a in range(3) if a != si]
        assert np.array_equal(long_clip[others][:, 0], short_clip[others][:, 0])  # the same in-plane window
    assert starts == set(range(clip_span(5, 4) - clip_span(5, 2) + 1))  # every placement inside occurs
    with pytest.raises(ValueError):
        sample_short_clip(long, stride=4)  # not shorter


def test_without_a_direction_the_array_order_is_assumed():
    assert anatomical_array_axes(None, [0, 1, 2]) == ARRAY_ORDER_AXES == {"SI": 0, "AP": 1, "LR": 2}
    assert anatomical_array_axes(np.eye(3).flatten(), None) == ARRAY_ORDER_AXES


def test_an_oblique_direction_still_gives_three_distinct_axes():
    from scipy.spatial.transform import Rotation
    oblique = Rotation.from_euler("zx", [40, 50], degrees=True).as_matrix()
    # the AP and SI rows are both closest to ITK index axis 2: per-axis resolution would collide
    direction = oblique.flatten()
    assert preprocessed_axis("AP", direction, [0, 1, 2]) == preprocessed_axis("SI", direction, [0, 1, 2])
    # the best aligned permutation: LR-x (|cos| 0.77), AP-z (0.77), SI-y (0.59); numpy holds (z, y, x)
    assert anatomical_array_axes(oblique.flatten(), [0, 1, 2]) == {"LR": 2, "AP": 0, "SI": 1}


def test_clips_never_leave_the_volume():
    axes = dict(ARRAY_ORDER_AXES)
    with pytest.raises(ValueError, match="does not fit"):
        sample_clip((20, 40, 40), axes, "axial", num_slices=8, stride=3, in_plane=(16, 16))  # needs 22 slices
    assert misfits((20, 40, 40), axes, 8, 3, (16, 16)) == [
        "axial clip needs 22x16x16 voxels (slices x in-plane), the case has 20x40x40"]
    assert misfits((22, 40, 40), axes, 8, 3, (16, 16)) == []
    assert len(misfits((22, 40, 40), axes, 8, 3, (24, 16))) == 2  # coronal and sagittal planes hold SI (22)
    with pytest.raises(ValueError, match="leaves a volume"):
        extract_clip(np.zeros((1, 10, 10, 10)), Clip((0, 1, 2), (5, 0, 0), 2, 4, (4, 4)))


def test_automatic_sizes():
    assert auto_num_slices(8, 2, min_extent=24) == 8  # 16 slices would span 31
    assert auto_num_slices(8, 2, min_extent=31) == 16
    assert auto_num_slices(4, 4, min_extent=40) == 8  # 12 slices span 45
    assert auto_num_slices(32, 2, min_extent=70) == 32  # at least one network stride
    assert auto_num_slices(32, 2, min_extent=50) is None
    assert auto_num_slices(1, 2, min_extent=100) == 16
    assert auto_in_plane([48, 32], [8, 8], [24, 31]) == [24, 24]
    assert auto_in_plane([48, 32], [8, 4], [60, 60]) == [48, 32]
    assert auto_in_plane([48, 32], [8, 8], [7, 60]) == [0, 32]


class CoordinateCases:
    """nnU-Net dataset stand-in: coordinate volumes, each case with its own direction."""

    def __init__(self, permutations, transpose):
        self.cases = {f"case_{i}": coordinate_volume(p, transpose) for i, p in enumerate(permutations)}

    def load_case(self, key):
        data, direction = self.cases[key]
        return data, None, None, {"sitk_stuff": {"direction": direction, "spacing": (1.0, 1.0, 1.0)}}


def test_the_sampler_resolves_each_case_from_its_own_direction():
    transpose = [2, 0, 1]
    cases = CoordinateCases([(0, 1, 2), (2, 0, 1), (1, 2, 0)], transpose)
    np.random.seed(0)
    sampler = ClipSampler(cases, sorted(cases.cases), batch_size=4, num_slices=4, long_stride=3, short_stride=1,
                          in_plane=(8, 8), transpose_forward=transpose)
    batch = next(sampler)
    assert set(batch) == {*CLIP_KEYS, "keys"} and len(batch["keys"]) == 4
    for name in CLIP_KEYS:
        assert batch[name].shape == (4, 3, 4, 8, 8) and batch[name].dtype == torch.float32
    for view in VIEWS:
        for clip in batch[view].numpy():
            assert varies_only_along(clip[ANATOMICAL_AXES[SLICE_AXIS[view]]], axis=0, step=3)
    for clip in batch["short"].numpy():
        assert varies_only_along(clip[ANATOMICAL_AXES["SI"]], axis=0, step=1)

    # without a transpose (no direction recorded) the array order is taken, whatever the direction says
    plain = ClipSampler(cases, ["case_0"], 2, 4, 3, 1, (8, 8), transpose_forward=None)
    assert plain.case_axes(cases.load_case("case_0")[3]) == ARRAY_ORDER_AXES

    augmented = ClipSampler(cases, sorted(cases.cases), 2, 4, 3, 1, (8, 8), transpose, clip_view_transform())
    batch = next(augmented)
    assert all(batch[name].shape == (2, 3, 4, 8, 8) and torch.isfinite(batch[name]).all() for name in CLIP_KEYS)
