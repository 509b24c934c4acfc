"""Confident pseudo-labels of a teacher and their health, measured without labels (pure torch).

Weak-to-strong training (FixMatch, UniMatch) keeps the voxels whose largest class probability reaches a
threshold; the trainers (integration/trainers/weak_to_strong.py, bcp.py) wire these into nnU-Net's step.
"""
import torch
from torch.nn.functional import dropout2d, dropout3d


def confident_pseudo_labels(probabilities: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax class, confident) of softmax ``probabilities`` (B, C, ...): a voxel is confident when its
    largest probability is at least ``threshold`` [paper: FixMatch ``max(q) >= tau``; code: UniMatch
    ``conf >= conf_thresh``]. Both outputs have shape (B, ...); the labels are int64, confident is bool."""
    confidence, labels = probabilities.detach().max(1)
    return labels, confidence >= threshold


def class_fractions(labels: torch.Tensor, num_classes: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of *all* voxels of ``labels`` that are class c (and, with ``mask``, inside it), for c in
    0..num_classes-1: with the confident mask this is each class's confident fraction, whose sum is the
    confident fraction of the batch."""
    counted = labels if mask is None else labels[mask]
    counts = torch.bincount(counted.flatten().long(), minlength=num_classes)[:num_classes]
    return counts.double() / max(labels.numel(), 1)


def agreement(labels_a: torch.Tensor, labels_b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Fraction of voxels (inside ``mask`` when given; nan when it is empty) where two label maps agree."""
    same = labels_a == labels_b
    if mask is not None:
        same = same[mask]
    return float(same.double().mean()) if same.numel() else float("nan")


# A class collapses when the teacher labels it confidently on less than this fraction of how often it
# occurs in the labeled patches of the same epoch [assumption: nnU-Net oversamples foreground in labeled
# patches (a third of them) and draws unlabeled patches uniformly, so a healthy ratio is well below 1 on
# small structures, but not ten times below]
COLLAPSE_RATIO = 0.1
# ... and only while the teacher confidently calls at least this fraction of the voxels background: a teacher
# that is unsure everywhere (early in training) has not collapsed, it has not learned yet [assumption]
COLLAPSE_MIN_BACKGROUND = 0.5


def collapsed_classes(confident: list[float], labeled: list[float], ratio: float = COLLAPSE_RATIO,
                      min_background: float = COLLAPSE_MIN_BACKGROUND) -> list[int]:
    """Foreground classes (index >= 1) whose confident pseudo-label fraction is below ``ratio`` times
    their fraction in the labeled patches, while background is confident on at least ``min_background``
    of the voxels; classes absent from the labeled patches are never reported."""
    if not confident or confident[0] < min_background:
        return []
    return [c for c in range(1, min(len(confident), len(labeled)))
            if labeled[c] > 0 and confident[c] < ratio * labeled[c]]


def feature_dropout(features: torch.Tensor, p: float) -> torch.Tensor:
    """Channel dropout of a (B, C, ...) feature map, 2d or 3d: UniMatch's feature perturbation
    ``nn.Dropout2d(0.5)`` on the encoder features the decoder receives [code: UniMatch
    ``more-scenarios/medical/model/unet.py``, p = 0.5]; surviving channels are scaled by 1/(1-p)."""
    if features.ndim == 4:
        return dropout2d(features, p, training=True)
    if features.ndim == 5:
        return dropout3d(features, p, training=True)
    raise ValueError(f"feature_dropout needs (B, C, X, Y) or (B, C, X, Y, Z) features, got {tuple(features.shape)}")


class SkipFeatureDropout:
    """Forward pre-hook of a U-Net decoder whose input is the list of encoder features (nnU-Net's
    PlainConvUNet / ResidualEncoderUNet ``decoder(skips)``): channel dropout on every feature map, for the
    batch samples in ``samples`` only (None: the hook does nothing). A plain object, not a bound method, so
    that a deep copy of the network (an EMA teacher) copies only this small state."""

    def __init__(self, p: float):
        self.p = p
        self.samples: slice | None = None

    def __call__(self, _module, args):
        if self.samples is None:
            return None
        part = self.samples
        skips = [torch.cat((s[:part.start], feature_dropout(s[part], self.p), s[part.stop:])) for s in args[0]]
        return (skips, *args[1:])
