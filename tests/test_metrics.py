"""Benchmark metrics on hand-made small 3D volumes whose answers can be counted by hand."""
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ssl.benchmark.metrics import case_metrics, dice, lesion_metrics, per_class_dice


def _box(shape, *slices):
    mask = np.zeros(shape, dtype=bool)
    mask[slices] = True
    return mask


# ---------------------------------------------------------------- Dice

def test_dice_two_shifted_cubes():
    # 4x4x4 cubes (64 voxels each) shifted by 2 along z: overlap 2x4x4 = 32 -> 2*32/128 = 0.5
    pred = _box((10, 10, 10), slice(0, 4), slice(0, 4), slice(0, 4))
    ref = _box((10, 10, 10), slice(2, 6), slice(0, 4), slice(0, 4))
    assert dice(pred, ref) == 0.5
    # 3x3x3 cubes shifted by 1 on every axis: overlap 2x2x2 = 8 -> 16/54 = 8/27
    pred = _box((6, 6, 6), slice(0, 3), slice(0, 3), slice(0, 3))
    ref = _box((6, 6, 6), slice(1, 4), slice(1, 4), slice(1, 4))
    assert dice(pred, ref) == pytest.approx(8 / 27)
    assert dice(ref, ref) == 1.0


def test_dice_empty_cases():
    empty = np.zeros((3, 3, 3), dtype=bool)
    cube = _box((3, 3, 3), slice(0, 2), slice(0, 2), slice(0, 2))
    assert math.isnan(dice(empty, empty))  # undefined -> NaN, aggregated with nanmean
    assert dice(empty, cube) == 0.0
    assert dice(cube, empty) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        dice(cube, np.zeros((3, 3, 4), dtype=bool))


def test_per_class_dice():
    ref = np.zeros((4, 4, 4), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[0:2, 0:2, 0:2] = 1          # class 1: 8 voxels
    pred[0:2, 0:2, 0:1] = 1         # class 1: 4 voxels, all inside -> 8/12
    ref[3, 3, 3] = 2                # class 2: predicted elsewhere -> 0
    pred[3, 0, 0] = 2
    result = per_class_dice(pred, ref, [1, 2, 3])  # class 3 absent from both -> NaN
    assert set(result) == {1, 2, 3}
    assert result[1] == pytest.approx(2 / 3)
    assert result[2] == 0.0
    assert math.isnan(result[3])


# ---------------------------------------------------------------- lesions

def _lesion_volumes():
    """Reference: lesion A (2x5x2 = 20 voxels) and lesion B (2x2x2 = 8) far apart.
    Prediction: c1 (4 voxels, 1 inside A), c2 (1 voxel, inside A), c3 (8 voxels, touches nothing)."""
    shape = (10, 10, 10)
    ref = _box(shape, slice(1, 3), slice(1, 6), slice(1, 3)) | _box(shape, slice(6, 8), slice(6, 8), slice(6, 8))
    pred = (_box(shape, slice(0, 2), slice(0, 2), slice(1, 2))
            | _box(shape, slice(1, 2), slice(4, 5), slice(1, 2))
            | _box(shape, slice(8, 10), slice(0, 2), slice(8, 10)))
    return pred, ref


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_lesion_metrics_counts(connectivity):
    pred, ref = _lesion_volumes()
    m = lesion_metrics(pred, ref, connectivity=connectivity)
    assert (m["n_ref_lesions"], m["n_pred_lesions"]) == (2, 3)
    assert m["n_detected_ref_lesions"] == 1
    assert m["ltpr"] == 0.5                  # A detected, B missed
    assert m["n_false_pred_lesions"] == 1
    assert m["lfpr"] == pytest.approx(1 / 3)  # normalised by the 3 predicted lesions
    assert (m["tp_voxels"], m["pred_voxels"], m["ref_voxels"]) == (2, 13, 28)
    assert m["ppv"] == pytest.approx(2 / 13)
    assert m["dice"] == pytest.approx(4 / 41)
    assert m["connectivity"] == connectivity
    assert "pred_volume" not in m


def test_connectivity_corner_and_edge_neighbours():
    corner = np.zeros((3, 3, 3), dtype=bool)
    corner[0, 0, 0] = corner[1, 1, 1] = True   # share only a corner
    edge = np.zeros((3, 3, 3), dtype=bool)
    edge[0, 0, 0] = edge[1, 1, 0] = True       # share an edge
    expected = {"corner": {6: 2, 18: 2, 26: 1}, "edge": {6: 2, 18: 1, 26: 1}}
    for name, mask in (("corner", corner), ("edge", edge)):
        for conn, n in expected[name].items():
            m = lesion_metrics(mask, mask, connectivity=conn)
            assert (m["n_ref_lesions"], m["n_pred_lesions"]) == (n, n), (name, conn)
            assert (m["ltpr"], m["lfpr"], m["ppv"]) == (1.0, 0.0, 1.0)
    assert lesion_metrics(corner, corner)["n_ref_lesions"] == 1  # default is 26


def test_connectivity_changes_ltpr():
    ref = np.zeros((3, 3, 3), dtype=bool)
    ref[0, 0, 0] = ref[1, 1, 1] = True
    pred = np.zeros_like(ref)
    pred[0, 0, 0] = True
    assert lesion_metrics(pred, ref, connectivity=26)["ltpr"] == 1.0
    assert lesion_metrics(pred, ref, connectivity=18)["ltpr"] == 0.5
    assert lesion_metrics(pred, ref, connectivity=6)["ltpr"] == 0.5


def test_lesion_edge_cases():
    empty = np.zeros((4, 4, 4), dtype=bool)
    blob = _box((4, 4, 4), slice(0, 2), slice(0, 2), slice(0, 2))
    no_ref = lesion_metrics(blob, empty)
    assert math.isnan(no_ref["ltpr"]) and no_ref["lfpr"] == 1.0 and no_ref["ppv"] == 0.0
    no_pred = lesion_metrics(empty, blob)
    assert math.isnan(no_pred["lfpr"]) and math.isnan(no_pred["ppv"]) and no_pred["ltpr"] == 0.0
    assert no_pred["dice"] == 0.0
    nothing = lesion_metrics(empty, empty)
    assert all(math.isnan(nothing[k]) for k in ("ppv", "ltpr", "lfpr", "dice"))
    assert (nothing["n_ref_lesions"], nothing["n_pred_lesions"]) == (0, 0)


def test_lesion_metrics_rejects_bad_input():
    blob = np.ones((2, 2, 2), dtype=bool)
    with pytest.raises(ValueError, match="connectivity"):
        lesion_metrics(blob, blob, connectivity=8)
    with pytest.raises(ValueError, match="3D"):
        lesion_metrics(np.ones((2, 2), bool), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="shapes"):
        lesion_metrics(blob, np.ones((2, 2, 3), bool))


def test_lesion_volumes_with_spacing():
    pred, ref = _lesion_volumes()
    m = lesion_metrics(pred, ref, spacing=(3.0, 1.0, 0.5))
    assert m["pred_volume"] == pytest.approx(13 * 1.5)
    assert m["ref_volume"] == pytest.approx(28 * 1.5)
    assert m["ltpr"] == 0.5  # ratios do not depend on spacing


# ---------------------------------------------------------------- files

def _write(array, path, spacing=(0.5, 1.0, 3.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)  # SimpleITK order x, y, z -> numpy axes (z, y, x) = (3.0, 1.0, 0.5)
    sitk.WriteImage(image, str(path))
    return path


def test_case_metrics_from_nifti(tmp_path):
    pred, ref = _lesion_volumes()
    pred_labels = pred.astype(np.uint8)       # lesion label 1
    ref_labels = ref.astype(np.uint8)
    ref_labels[9, 9, 9] = pred_labels[9, 9, 9] = 2   # class 2 identical -> Dice 1
    pred_file = _write(pred_labels, tmp_path / "case_000_pred.nii.gz")
    ref_file = _write(ref_labels, tmp_path / "case_000.nii.gz")
    m = case_metrics(pred_file, ref_file, labels=[1, 2, 3], lesion_label=1)
    assert m["dice"][1] == pytest.approx(4 / 41)
    assert m["dice"][2] == 1.0
    assert math.isnan(m["dice"][3])
    assert m["mean_dice"] == pytest.approx((4 / 41 + 1.0) / 2)  # nanmean over classes
    lesion = m["lesion"]
    assert (lesion["ltpr"], lesion["n_ref_lesions"], lesion["n_pred_lesions"]) == (0.5, 2, 3)
    assert lesion["lfpr"] == pytest.approx(1 / 3)
    assert lesion["ppv"] == pytest.approx(2 / 13)
    assert lesion["ref_volume"] == pytest.approx(28 * 1.5)
    assert "lesion" not in case_metrics(pred_file, ref_file, labels=[1])


def test_case_metrics_shape_mismatch(tmp_path):
    pred_file = _write(np.zeros((4, 5, 6)), tmp_path / "pred_small.nii.gz")
    ref_file = _write(np.zeros((4, 5, 7)), tmp_path / "ref_big.nii.gz")
    with pytest.raises(ValueError) as excinfo:
        case_metrics(pred_file, ref_file, labels=[1])
    message = str(excinfo.value)
    assert "pred_small.nii.gz" in message and "ref_big.nii.gz" in message
    assert "(4, 5, 6)" in message and "(4, 5, 7)" in message


def test_case_metrics_warns_on_spacing_mismatch(tmp_path):
    mask = np.zeros((3, 3, 3))
    mask[1, 1, 1] = 1
    pred_file = _write(mask, tmp_path / "pred.nii.gz", spacing=(1.0, 1.0, 1.0))
    ref_file = _write(mask, tmp_path / "ref.nii.gz", spacing=(1.0, 1.0, 2.0))
    with pytest.warns(UserWarning, match="spacing differs"):
        m = case_metrics(pred_file, ref_file, labels=[1], lesion_label=1)
    assert m["dice"][1] == 1.0 and m["lesion"]["ref_volume"] == 2.0  # reference spacing is used
