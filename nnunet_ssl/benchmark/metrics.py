"""Per-case segmentation metrics for the benchmark tables.

* 3D Dice per class and over classes (the tables report mean ± std over cases; aggregate with
  ``np.nanmean`` / ``np.nanstd`` because Dice is NaN for a class absent from both masks).
* For binary lesion tasks (ISBI 2015 longitudinal MS lesion challenge, Carass et al., NeuroImage 148
  (2017) 77-102) the voxel-wise PPV and the count-based lesion-wise LTPR and LFPR, where a lesion is a
  3D connected component.

Definitions (P = predicted mask, G = reference mask, |.| = number of voxels):

* DSC  = 2 |P ∩ G| / (|P| + |G|)
* PPV  = |P ∩ G| / |P|                                  (voxel-wise precision)
* LTPR = #{components of G that share >= 1 voxel with P} / #{components of G}
* LFPR = #{components of P that share no voxel with G}  / #{components of P}

LFPR is normalised by the number of *predicted* lesions (as in the challenge evaluation), so it is
1 - lesion-wise precision, not a false-positive rate over negatives.

Connectivity: lesions are 3D connected components with **26-connectivity by default** (voxels touching
by a face, an edge or a corner belong to the same lesion). 6- (faces only) and 18-connectivity (faces
and edges) can be selected. Which connectivity the official ISBI 2015 evaluation code uses (18 or 26)
is still an open question in the reference spec; the connectivity changes lesion counts and therefore
LTPR/LFPR, so every result dict records the connectivity it was computed with.

Everything here is pure numpy/scipy; the only I/O is :func:`case_metrics`, which reads two NIfTI
files with SimpleITK.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from scipy import ndimage

_CONNECTIVITY_RANK = {6: 1, 18: 2, 26: 3}


def _same_shape(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference have different shapes: {pred.shape} vs {ref.shape}")


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient 2|P ∩ G| / (|P| + |G|) of two masks of the same shape (any dimension).

    Non-zero voxels count as foreground. Returns **NaN when both masks are empty** (Dice is undefined
    there; a perfect "nothing predicted, nothing there" case is neither a hit nor a miss). Aggregate
    over cases or classes with ``np.nanmean``. When only one mask is empty the Dice is 0.0.
    """
    pred = np.asarray(pred) != 0
    ref = np.asarray(ref) != 0
    _same_shape(pred, ref)
    denominator = int(pred.sum()) + int(ref.sum())
    if denominator == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, ref).sum()) / denominator


def per_class_dice(pred_labels: np.ndarray, ref_labels: np.ndarray, labels: list[int]) -> dict[int, float]:
    """{label: Dice of (pred_labels == label) vs (ref_labels == label)} for each label in ``labels``.

    NaN for a label absent from both label maps (see :func:`dice`).
    """
    pred_labels = np.asarray(pred_labels)
    ref_labels = np.asarray(ref_labels)
    _same_shape(pred_labels, ref_labels)
    return {int(label): dice(pred_labels == label, ref_labels == label) for label in labels}


def _nanmean(values) -> float:
    values = np.asarray(list(values), dtype=float)
    if values.size == 0 or np.all(np.isnan(values)):
        return float("nan")
    return float(np.nanmean(values))


def lesion_metrics(pred: np.ndarray, ref: np.ndarray, connectivity: int = 26, spacing=None) -> dict:
    """ISBI 2015-style lesion metrics of a binary 3D prediction ``pred`` against a reference ``ref``.

    Non-zero voxels are lesion. A lesion is a 3D connected component (``scipy.ndimage.label``) with
    the given ``connectivity``: **26 (default)** = faces, edges and corners; 18 = faces and edges;
    6 = faces only. The default of 26 is our choice; the reference spec notes Carass et al. may use
    18 and lists the official choice as open, so pass ``connectivity=18`` to reproduce that variant.

    Returns a dict with

    * ``ppv``: voxel-wise |P ∩ G| / |P|; **NaN when nothing is predicted**.
    * ``ltpr``: fraction of reference lesions that share at least one voxel with the prediction;
      **NaN when there is no reference lesion**.
    * ``lfpr``: fraction of predicted lesions that share no voxel with the reference (normalised by
      the *predicted* lesion count); **NaN when there is no predicted lesion**.
    * ``dice``: voxel-wise Dice (NaN when both masks are empty).
    * counts: ``n_ref_lesions``, ``n_pred_lesions``, ``n_detected_ref_lesions`` (numerator of LTPR),
      ``n_false_pred_lesions`` (numerator of LFPR), ``tp_voxels``, ``pred_voxels``, ``ref_voxels``.
    * ``connectivity``: the connectivity used.
    * only when ``spacing`` (voxel size per array axis, in the order of the numpy axes, e.g. mm) is
      given: ``pred_volume`` and ``ref_volume`` (voxel count × voxel volume). Spacing does not change
      any of the ratios above.
    """
    if connectivity not in _CONNECTIVITY_RANK:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
    pred = np.asarray(pred) != 0
    ref = np.asarray(ref) != 0
    _same_shape(pred, ref)
    if pred.ndim != 3:
        raise ValueError(f"lesion metrics need 3D masks, got {pred.ndim}D arrays of shape {pred.shape}")
    structure = ndimage.generate_binary_structure(3, _CONNECTIVITY_RANK[connectivity])
    ref_components, n_ref = ndimage.label(ref, structure=structure)
    pred_components, n_pred = ndimage.label(pred, structure=structure)
    overlap = np.logical_and(pred, ref)
    n_detected = int(np.unique(ref_components[overlap]).size)  # reference lesions touched by P
    n_pred_hitting = int(np.unique(pred_components[overlap]).size)  # predicted lesions touching G
    tp_voxels, pred_voxels, ref_voxels = int(overlap.sum()), int(pred.sum()), int(ref.sum())
    result = {
        "ppv": tp_voxels / pred_voxels if pred_voxels else float("nan"),
        "ltpr": n_detected / n_ref if n_ref else float("nan"),
        "lfpr": (n_pred - n_pred_hitting) / n_pred if n_pred else float("nan"),
        "dice": 2.0 * tp_voxels / (pred_voxels + ref_voxels) if pred_voxels + ref_voxels else float("nan"),
        "n_ref_lesions": int(n_ref),
        "n_pred_lesions": int(n_pred),
        "n_detected_ref_lesions": n_detected,
        "n_false_pred_lesions": int(n_pred - n_pred_hitting),
        "tp_voxels": tp_voxels,
        "pred_voxels": pred_voxels,
        "ref_voxels": ref_voxels,
        "connectivity": connectivity,
    }
    if spacing is not None:
        spacing = np.asarray(spacing, dtype=float)
        if spacing.shape != (3,):
            raise ValueError(f"spacing must have one value per axis (3), got {spacing.tolist()}")
        voxel_volume = float(np.prod(spacing))
        result["pred_volume"] = pred_voxels * voxel_volume
        result["ref_volume"] = ref_voxels * voxel_volume
    return result


def has_foreground(label_file: str, labels: list[int]) -> bool:
    """Whether a label map holds any of ``labels`` (a case without one has an undefined, NaN, Dice)."""
    import SimpleITK as sitk
    return bool(np.isin(sitk.GetArrayFromImage(sitk.ReadImage(str(label_file))), labels).any())


def case_metrics(pred_file: str, ref_file: str, labels: list[int], lesion_label: int | None = None,
                 connectivity: int = 26) -> dict:
    """Metrics of one case from a predicted and a reference label map (NIfTI or anything SimpleITK reads).

    Returns ``{"pred_file", "ref_file", "dice": {label: Dice}, "mean_dice": nanmean over labels}``
    and, when ``lesion_label`` is given, ``"lesion": lesion_metrics(pred == lesion_label,
    ref == lesion_label, connectivity, spacing)`` with the image spacing (lesion volumes in mm³).
    ``mean_dice`` is the per-case "overall"/foreground Dice (NaN only if every label is absent from
    both files). Raises ValueError naming both files if the array shapes differ; a spacing/origin
    mismatch only warns (the arrays are compared voxel by voxel).
    """
    import SimpleITK as sitk

    pred_image, ref_image = sitk.ReadImage(str(pred_file)), sitk.ReadImage(str(ref_file))
    pred_labels, ref_labels = sitk.GetArrayFromImage(pred_image), sitk.GetArrayFromImage(ref_image)
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"shape mismatch: prediction {os.fspath(pred_file)} has array shape {pred_labels.shape}, "
                         f"reference {os.fspath(ref_file)} has array shape {ref_labels.shape}")
    if not np.allclose(pred_image.GetSpacing(), ref_image.GetSpacing(), rtol=1e-4, atol=1e-6):
        warnings.warn(f"spacing differs between prediction {pred_file} {pred_image.GetSpacing()} and "
                      f"reference {ref_file} {ref_image.GetSpacing()}; using the reference spacing", stacklevel=2)
    class_dice = per_class_dice(pred_labels, ref_labels, labels)
    result = {"pred_file": os.fspath(pred_file), "ref_file": os.fspath(ref_file),
              "dice": class_dice, "mean_dice": _nanmean(class_dice.values())}
    if lesion_label is not None:
        spacing = ref_image.GetSpacing()[::-1] if ref_labels.ndim == 3 else None  # SimpleITK is x,y,z; numpy z,y,x
        result["lesion"] = lesion_metrics(pred_labels == lesion_label, ref_labels == lesion_label,
                                          connectivity=connectivity, spacing=spacing)
    return result
