"""Strong views of an already augmented (weak) patch: intensity only, so every voxel stays where it was
and the teacher's pseudo-labels on the weak view stay valid for the strong one. batchgeneratorsv2
transforms, run inside nnU-Net's data loader (and its worker processes) after nnU-Net's own training
transforms.

UniMatch's strong view of a medical slice [code: UniMatch ``more-scenarios/medical/dataset/acdc.py``]:
``ColorJitter(0.5, 0.5, 0.5, 0.25)`` with p = 0.8 (on a grey image only brightness and contrast act:
factors U(0.5, 1.5)), then Gaussian blur with p = 0.5, sigma U(0.1, 2.0) pixels; CutMix follows in the
trainer (blocks/mixing.py). We add gamma and Gaussian noise with nnU-Net's own ranges at a higher
probability [assumption: the brief's "brightness/contrast/gamma/blur/noise"; nnU-Net's weak view
applies them at p = 0.1-0.3, so the strong view differs mostly by how often and how much].
"""
from dataclasses import dataclass

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform


def fitting_sigma(axis_length: int) -> float:
    """The largest blur sigma whose kernel fits an axis of this length. batchgeneratorsv2 pads by reflection, which
    needs a kernel radius below the axis length, and its kernel (truncate 6, odd size) has radius at most
    3 sigma + 0.25. A sigma of 0.01 is a one-voxel kernel: no blur along an axis of one voxel."""
    return max(0.01, (axis_length - 1) / 3)


class FittingGaussianBlur(GaussianBlurTransform):
    """GaussianBlurTransform with each axis's sigma capped by ``fitting_sigma``: UniMatch draws sigma up to 2
    pixels for 2d slices, whose kernel does not fit a patch of 4 slices (ACDC's 3d CPU plans: 4 x 128 x 96 at
    10 x 1.5 x 1.5 mm); in-plane the draw is unchanged, through 4 slices at most sigma 1 [assumption]."""

    def get_parameters(self, **data_dict) -> dict:
        params = super().get_parameters(**data_dict)
        sizes = data_dict["image"].shape[1:]
        params["sigmas"] = [[min(float(s), fitting_sigma(n)) for s, n in zip(per_channel, sizes)]
                            for per_channel in params["sigmas"]]
        return params


@dataclass(frozen=True)
class StrongIntensity:
    jitter_probability: float = 0.8  # [code: UniMatch, ColorJitter applied with p = 0.8]
    brightness: tuple[float, float] = (0.5, 1.5)  # [code: UniMatch ColorJitter(brightness=0.5)]
    contrast: tuple[float, float] = (0.5, 1.5)  # [code: UniMatch ColorJitter(contrast=0.5)]
    blur_probability: float = 0.5  # [code: UniMatch blur(p=0.5)]
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # voxels [code: UniMatch, sigma U(0.1, 2.0)]
    gamma_probability: float = 0.5  # [assumption]
    gamma: tuple[float, float] = (0.7, 1.5)  # [nnU-Net's GammaTransform range]
    noise_probability: float = 0.5  # [assumption]
    noise_variance: tuple[float, float] = (0.0, 0.1)  # [nnU-Net's GaussianNoiseTransform range]

    def transforms(self) -> ComposeTransforms:
        """The strong view of one (C, X, Y[, Z]) sample, channel by channel as nnU-Net's transforms."""
        jitter = ComposeTransforms([
            MultiplicativeBrightnessTransform(self.brightness, synchronize_channels=False, p_per_channel=1),
            ContrastTransform(self.contrast, preserve_range=False, synchronize_channels=False, p_per_channel=1)])
        return ComposeTransforms([
            RandomTransform(jitter, self.jitter_probability),
            RandomTransform(FittingGaussianBlur(self.blur_sigma, synchronize_channels=False,
                                                synchronize_axes=True, p_per_channel=1), self.blur_probability),
            RandomTransform(GammaTransform(self.gamma, p_invert_image=0, synchronize_channels=False, p_per_channel=1,
                                           p_retain_stats=1), self.gamma_probability),
            RandomTransform(GaussianNoiseTransform(self.noise_variance, p_per_channel=1, synchronize_channels=True),
                            self.noise_probability)])


class AppendStrongViews(BasicTransform):
    """After nnU-Net's training transforms: the image becomes ``[weak, strong_1, ..., strong_n]`` stacked
    on the channel axis, each strong view an independent draw of ``strong`` applied to the weak image.
    nnU-Net's loader batches whatever channels the transforms return, so its ``data`` is then
    (B, (n + 1) C, ...); ``split_views`` undoes it. The segmentation passes unchanged."""

    def __init__(self, strong: BasicTransform, views: int):
        super().__init__()
        if views < 1:
            raise ValueError(f"need at least one strong view, got {views}")
        self.strong, self.views = strong, views

    def __call__(self, **data_dict) -> dict:
        weak = data_dict["image"]
        strong = [self.strong(image=weak.clone())["image"] for _ in range(self.views)]
        return {**data_dict, "image": torch.cat([weak, *strong])}


def split_views(data: torch.Tensor, channels: int) -> list[torch.Tensor]:
    """(B, (n + 1) C, ...) from AppendStrongViews -> [weak, strong_1, ..., strong_n], each (B, C, ...)."""
    if data.shape[1] % channels:
        raise ValueError(f"{data.shape[1]} channels are not whole views of {channels} channel(s)")
    return list(torch.split(data, channels, dim=1))
