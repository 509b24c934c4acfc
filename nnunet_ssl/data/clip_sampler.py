"""Batches of MLSSCL clips (axial, coronal, sagittal long clips and a short axial clip), read from an
nnU-Net preprocessed dataset.

Like ``sampler.TwoViewPatchSampler`` it reuses nnU-Net's dataset classes (``load_case``) and
batchgenerators' DataLoader (case sampling, worker seeding), so it runs in nnU-Net's
multi-process augmenters unchanged. The geometry lives in ``data.clips``.
"""
from typing import Sequence

import numpy as np
import torch
from batchgenerators.dataloading.data_loader import DataLoader
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from threadpoolctl import threadpool_limits

from nnunet_ssl.data.clips import VIEWS, anatomical_array_axes, extract_clip, sample_clip, sample_short_clip

CLIP_KEYS = (*VIEWS, "short")  # batch keys, one (B, c, C, H, W) tensor each


def clip_view_transform() -> BasicTransform:
    """Augmentation of one clip (c, C, H, W), the same for every slice of it [spec 2.3, assumption;
    the paper's list is unknown]: brightness, contrast and gamma jitter and Gaussian noise with
    nnU-Net's ranges at higher probabilities (contrastive learning needs stronger views than
    segmentation), and mirroring of the in-plane axes. Left out: Gaussian blur, which would mix
    neighbouring slices of a strided clip, and crop-resize (the in-plane window position is the
    spatial augmentation)."""
    return ComposeTransforms([
        RandomTransform(MultiplicativeBrightnessTransform(BGContrast((0.75, 1.25)), synchronize_channels=False),
                        apply_probability=0.5),
        RandomTransform(ContrastTransform(BGContrast((0.75, 1.25)), preserve_range=True, synchronize_channels=False),
                        apply_probability=0.5),
        RandomTransform(GammaTransform(BGContrast((0.7, 1.5)), p_invert_image=0, synchronize_channels=False,
                                       p_per_channel=1, p_retain_stats=1), apply_probability=0.3),
        RandomTransform(GaussianNoiseTransform((0, 0.1), p_per_channel=1, synchronize_channels=True),
                        apply_probability=0.2),
        MirrorTransform(allowed_axes=(1, 2)),  # in-plane only: the slice order of a clip is kept
    ])


class ClipSampler(DataLoader):
    """Yields {'axial', 'coronal', 'sagittal', 'short': (B, c, C, H, W) float tensors, 'keys': [case ids]}.

    Cases are drawn uniformly with replacement. Per case: three long clips (``long_stride``) at
    independent uniform positions [spec 2.3], and a short axial clip (``short_stride``) inside the
    long axial clip's span and in-plane window. Every clip lies entirely inside the volume (the
    method checks at start-up that every case is large enough).

    Args:
        transpose_forward: nnU-Net's axis permutation. With it, each case's anatomical axes come from
            the ITK direction in its properties (``sitk_stuff``); with None, array axes 0, 1, 2 are
            taken as SI, AP, LR.
        view_transform: applied to every clip independently (None: no augmentation).
    """

    def __init__(self, dataset, case_ids: Sequence[str], batch_size: int, num_slices: int, long_stride: int,
                 short_stride: int, in_plane: Sequence[int], transpose_forward: Sequence[int] | None,
                 view_transform: BasicTransform | None = None):
        super().__init__(dataset, batch_size, num_threads_in_multithreaded=1, seed_for_shuffle=None,
                         return_incomplete=False, shuffle=True, infinite=True)
        self.indices = list(case_ids)
        self.num_slices, self.long_stride, self.short_stride = num_slices, long_stride, short_stride
        self.in_plane = [int(s) for s in in_plane]
        self.transpose_forward = list(transpose_forward) if transpose_forward is not None else None
        self.view_transform = view_transform

    def case_axes(self, properties: dict) -> dict[str, int]:
        direction = properties.get("sitk_stuff", {}).get("direction") if self.transpose_forward else None
        return anatomical_array_axes(direction, self.transpose_forward)

    def clips_of(self, data, properties: dict) -> dict[str, np.ndarray]:
        """The four clips of one case: {'axial', 'coronal', 'sagittal', 'short': (c, C, H, W)}."""
        shape, axes = data.shape[1:], self.case_axes(properties)
        long = {view: sample_clip(shape, axes, view, self.num_slices, self.long_stride, self.in_plane)
                for view in VIEWS}
        clips = {**long, "short": sample_short_clip(long["axial"], self.short_stride)}
        return {name: extract_clip(data, clip) for name, clip in clips.items()}

    def generate_train_batch(self) -> dict:
        keys = self.get_indices()
        batch: dict[str, list] = {name: [] for name in CLIP_KEYS}
        with torch.no_grad(), threadpool_limits(limits=1, user_api=None):
            for key in keys:
                data, _seg, _prev, properties = self._data.load_case(key)
                for name, clip in self.clips_of(data, properties).items():
                    clip = torch.from_numpy(clip)
                    batch[name].append(self.view_transform(image=clip)["image"] if self.view_transform else clip)
        return {**{name: torch.stack(clips) for name, clips in batch.items()}, "keys": list(keys)}
