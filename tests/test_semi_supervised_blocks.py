"""Pure parts of weak-to-strong and copy-paste training: confident pseudo-labels, health, boxes, pasting,
strong intensity views, feature dropout (fast, no nnU-Net training)."""
import math

import numpy as np
import pytest
import torch

from nnunet_ssl.blocks.mixing import boxes_for_batch, copy_paste_box, cutmix_box, paste
from nnunet_ssl.blocks.pseudo_labels import (agreement, class_fractions, collapsed_classes, confident_pseudo_labels,
                                             feature_dropout)
from nnunet_ssl.data.strong_views import AppendStrongViews, StrongIntensity, split_views


def test_confident_pseudo_labels_threshold_on_the_largest_probability():
    probabilities = torch.tensor([[0.96, 0.04], [0.5, 0.5], [0.02, 0.98], [0.05, 0.95]]).T.reshape(1, 2, 2, 2)
    labels, confident = confident_pseudo_labels(probabilities, 0.95)
    assert labels.flatten().tolist() == [0, 0, 1, 1]
    assert confident.flatten().tolist() == [True, False, True, True]  # 0.95 itself counts (>=)
    fractions = class_fractions(labels, 3, confident)  # of all 4 voxels: 1 confident bg, 2 confident class 1
    assert fractions.tolist() == [0.25, 0.5, 0.0] and class_fractions(labels, 2).tolist() == [0.5, 0.5]


def test_agreement_and_collapse_rule():
    a, b = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 0, 0])
    assert agreement(a, b) == 0.5
    assert agreement(a, b, torch.tensor([True, True, False, False])) == 1.0
    assert math.isnan(agreement(a, b, torch.zeros(4, dtype=torch.bool)))
    # class 1 confident on 0.5% of unlabeled voxels but 10% of labeled ones: collapsed; class 2 fine;
    # class 3 absent from the labeled patches: not judged
    assert collapsed_classes([0.9, 0.005, 0.02, 0.0], [0.7, 0.1, 0.1, 0.0]) == [1]
    assert collapsed_classes([0.5, 0.0625, 0.25], [0.5, 0.25, 0.25], ratio=0.25) == []  # exactly ratio x: not below
    # a teacher unsure everywhere (confident background on 3% of the voxels) has not collapsed yet
    assert collapsed_classes([0.03, 0.0], [0.9, 0.1]) == []


def test_cutmix_box_2d_is_unimatch_s_rule():
    rng = np.random.default_rng(0)
    boxes = [cutmix_box((64, 64), rng) for _ in range(400)]
    empty = [b for b in boxes if not b.any()]
    assert 0.4 < len(empty) / len(boxes) < 0.6  # p = 0.5
    for box in (b for b in boxes if b.any()):
        rows, cols = np.nonzero(box)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert box.sum() == h * w  # one rectangle
        assert 0.02 * 64 * 64 * 0.9 <= h * w <= 0.4 * 64 * 64  # int() truncation makes it a little smaller
        assert 0.3 * 0.8 <= h / w <= (1 / 0.3) / 0.8
    always = cutmix_box((40, 56), np.random.default_rng(1), probability=1.0, area=(0.25, 0.25), ratio=(1.0, 1.0))
    assert always.sum() == int(math.sqrt(0.25 * 40 * 56)) ** 2  # h = w = int(sqrt(s))


def test_cutmix_box_3d_volume_and_sides():
    rng = np.random.default_rng(0)
    box = cutmix_box((32, 48, 32), rng, probability=1.0, area=(0.125, 0.125), ratio=(1.0, 1.0))
    side = int((0.125 * 32 * 48 * 32) ** (1 / 3))  # ratios 1: a cube of the drawn volume
    assert box.sum() == side ** 3
    for _ in range(50):
        box = cutmix_box((20, 24, 16), rng, probability=1.0)
        assert box.sum() <= 0.4 * 20 * 24 * 16 and box.any()


def test_copy_paste_box_is_two_thirds_of_each_side_anywhere_it_fits():
    rng = np.random.default_rng(0)
    corners = set()
    for _ in range(200):
        box = copy_paste_box((30, 24), rng)
        rows, cols = np.nonzero(box)
        assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (20, 16) and box.sum() == 320
        corners.add((rows.min(), cols.min()))
        assert rows.min() < 30 - 20 and cols.min() < 24 - 16  # BCP: randint(0, n - b), high exclusive
    assert len(corners) > 20
    assert copy_paste_box((9, 9, 6), rng).sum() == 6 * 6 * 4
    assert copy_paste_box((3, 3), rng).sum() == 4  # n - b = 1: the only corner is 0


def test_paste_images_labels_and_batch_boxes():
    into, source = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    boxes = torch.zeros(2, 4, 4, dtype=torch.bool)
    boxes[0, :2, :2] = True
    mixed = paste(into, source, boxes)
    assert mixed[0, 0].sum() == 4 and mixed[0, 0, :2, :2].eq(1).all() and mixed[1].sum() == 0
    labels = paste(torch.zeros(2, 4, 4, dtype=torch.long), torch.full((2, 4, 4), 3), boxes)  # no channel axis
    assert labels[0, :2, :2].eq(3).all() and labels.sum() == 12
    batch = boxes_for_batch(copy_paste_box, 3, (6, 6, 6), np.random.default_rng(0))
    assert batch.shape == (3, 6, 6, 6) and batch.dtype == torch.bool and (batch.flatten(1).sum(1) == 64).all()
    with pytest.raises(ValueError):
        paste(into, source, torch.zeros(2, 5, 4, dtype=torch.bool))


def test_strong_views_keep_the_weak_view_and_change_intensities_only():
    torch.manual_seed(0)
    np.random.seed(0)
    weak = torch.randn(2, 16, 16, 12)  # two channels
    out = AppendStrongViews(StrongIntensity().transforms(), views=2)(image=weak.clone(), segmentation=None)
    views = split_views(out["image"][None], channels=2)
    assert len(views) == 3 and torch.equal(views[0][0], weak)
    assert all(v.shape == (1, 2, 16, 16, 12) for v in views)
    assert not torch.equal(views[1], views[2])  # independent draws
    # with every perturbation off, a strong view is the weak one
    off = StrongIntensity(jitter_probability=0, blur_probability=0, gamma_probability=0, noise_probability=0)
    same = AppendStrongViews(off.transforms(), views=1)(image=weak.clone())["image"]
    assert torch.equal(same[2:], weak)
    # brightness alone, fixed factor 1.5: exactly 1.5 x the weak view
    bright = StrongIntensity(jitter_probability=1, brightness=(1.5, 1.5), contrast=(1.0, 1.0), blur_probability=0,
                             gamma_probability=0, noise_probability=0)
    assert torch.allclose(AppendStrongViews(bright.transforms(), 1)(image=weak.clone())["image"][2:], 1.5 * weak)
    with pytest.raises(ValueError):
        split_views(torch.zeros(1, 5, 4, 4), channels=2)


def test_consistency_share_uses_the_supervised_loss_magnitude():
    from nnunet_ssl.blocks.consistency import consistency_share
    assert consistency_share(0.9, 0.1) == pytest.approx(0.1)
    assert consistency_share(-0.9, 0.1) == pytest.approx(0.1)  # nnU-Net's Dice + CE is negative late in training
    assert consistency_share(0.0, 0.0) == 0.0 and consistency_share(1.0, 0.0) == 0.0


def test_feature_dropout_drops_whole_channels():
    torch.manual_seed(0)
    features = torch.ones(4, 64, 3, 3, 3)
    dropped = feature_dropout(features, 0.5)
    per_channel = dropped.flatten(2)
    assert ((per_channel == 0).all(2) | (per_channel == 2).all(2)).all()  # a channel is 0 or scaled by 1/(1-p)
    assert 0.35 < (per_channel[:, :, 0] == 0).double().mean() < 0.65
    assert feature_dropout(torch.ones(2, 8, 4, 4), 0.0).eq(1).all()
    with pytest.raises(ValueError):
        feature_dropout(torch.ones(2, 8), 0.5)


def test_skip_dropout_hook_perturbs_only_its_samples_and_survives_a_deep_copy():
    import copy

    from nnunet_ssl.blocks.pseudo_labels import SkipFeatureDropout

    class Decoder(torch.nn.Module):
        def forward(self, skips):
            return [s.clone() for s in skips]

    torch.manual_seed(0)
    decoder, hook = Decoder(), SkipFeatureDropout(0.5)
    decoder.register_forward_pre_hook(hook)
    skips = [torch.ones(6, 32, 4, 4), torch.ones(6, 64, 2, 2)]
    assert all(torch.equal(a, b) for a, b in zip(decoder(skips), skips))  # samples None: untouched
    hook.samples = slice(2, 4)
    out = decoder(skips)
    for o in out:
        assert o[:2].eq(1).all() and o[4:].eq(1).all() and (o[2:4] == 0).any() and (o[2:4] == 2).any()
    teacher = copy.deepcopy(decoder)
    teacher._forward_pre_hooks.clear()
    assert all(torch.equal(a, b) for a, b in zip(teacher(skips), skips)) and len(decoder._forward_pre_hooks) == 1


def test_strong_blur_fits_thin_axes():
    """ACDC's 3d CPU patch has 4 slices: UniMatch's sigma up to 2 made batchgeneratorsv2's reflection padding fail
    there. Each axis's sigma is capped to what its kernel fits; in-plane the draw is unchanged."""
    from batchgeneratorsv2.transforms.noise.gaussian_blur import _compute_kernel_size
    from nnunet_ssl.data.strong_views import FittingGaussianBlur, fitting_sigma
    assert fitting_sigma(4) == 1.0 and fitting_sigma(1) == 0.01 and fitting_sigma(128) == pytest.approx(127 / 3)
    for length in range(1, 40):  # the kernel of the capped sigma always fits (truncate 6, as blur_dimension uses)
        assert _compute_kernel_size(fitting_sigma(length), truncate=6) // 2 < length
    blur = FittingGaussianBlur((2.0, 2.0), synchronize_channels=False, synchronize_axes=True, p_per_channel=1)
    image = torch.randn(1, 4, 32, 24)
    assert blur.get_parameters(image=image)["sigmas"] == [[1.0, 2.0, 2.0]]
    out = blur(image=image.clone())["image"]  # the unpatched transform raised here
    assert out.shape == image.shape and not torch.equal(out, image)
    views = AppendStrongViews(StrongIntensity(blur_probability=1).transforms(), 2)(image=torch.randn(1, 1, 32, 24))
    assert views["image"].shape == (3, 1, 32, 24)
