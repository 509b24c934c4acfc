"""Batches of two-view patches with their positions, read from an nnU-Net preprocessed dataset.

nnUNetDataLoader samples foreground-biased patches and does not return where it cropped, so
positional methods need this small sampler. It reuses nnU-Net's dataset classes and crop function
and batchgenerators' DataLoader (case sampling, worker seeding), so it runs in nnU-Net's
multi-process augmenters unchanged.
"""
from typing import Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from batchgenerators.dataloading.data_loader import DataLoader
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from threadpoolctl import threadpool_limits

from nnunet_ssl.data.positions import (crop_around_patch, position_from_properties, random_patch_start,
                                       slice_position_from_properties)


class TwoViewPatchSampler(DataLoader):
    """Yields {'view1', 'view2': (B, C, *patch), 'positions': (B,), 'keys': [case ids]}.

    Cases are drawn with replacement (optionally weighted), the patch location uniformly with no
    foreground oversampling [spec 3.1: positions must not be biased towards labels]. Both views
    come from the same crop, as in PCL [code: dataset/utils.py pad_and_or_crop, shared crop].
    """

    def __init__(self, dataset, case_ids: Sequence[str], batch_size: int, patch_size: Sequence[int],
                 crop_size: Sequence[int], view_transform: BasicTransform, position_axis: int,
                 sampling_probabilities: Sequence[float] | None = None):
        super().__init__(dataset, batch_size, num_threads_in_multithreaded=1, seed_for_shuffle=None,
                         return_incomplete=False, shuffle=True, infinite=True,
                         sampling_probabilities=sampling_probabilities)
        self.indices = list(case_ids)
        self.patch_size = [int(s) for s in patch_size]
        self.crop_size = [int(s) for s in crop_size]  # larger, so spatial augmentation has context
        self.view_transform = view_transform
        self.position_axis = position_axis

    def generate_train_batch(self) -> dict:
        keys = self.get_indices()
        views1, views2, positions = [], [], []
        with torch.no_grad(), threadpool_limits(limits=1, user_api=None):
            for key in keys:
                data, _seg, _prev, properties = self._data.load_case(key)
                shape = data.shape[1:]
                start = random_patch_start(shape, self.patch_size)
                bbox = crop_around_patch(start, self.patch_size, self.crop_size)
                crop = torch.from_numpy(crop_and_pad_nd(data, bbox, 0)).float()
                views1.append(self.view_transform(image=crop.clone())["image"])
                views2.append(self.view_transform(image=crop)["image"])
                positions.append(position_from_properties(properties, shape, start, self.patch_size,
                                                          self.position_axis))
        return {"view1": torch.stack(views1), "view2": torch.stack(views2),
                "positions": torch.tensor(positions, dtype=torch.float32), "keys": list(keys)}


def slice_sampling_probabilities(slice_counts: Sequence[int]) -> np.ndarray:
    """Case probabilities proportional to the number of slices: with a uniform slice inside the
    drawn case, every slice of every case is equally likely, as in PCL's pooled-slice dataset
    [code: dataset/chd.py:30-45, DataLoader(shuffle=True)]."""
    counts = np.asarray(slice_counts, dtype=float)
    if counts.ndim != 1 or len(counts) == 0 or (counts <= 0).any():
        raise ValueError(f"slice counts must be positive, got {list(slice_counts)}")
    return counts / counts.sum()


class TwoViewSliceSampler(DataLoader):
    """PCL in nnU-Net's ``2d`` configuration: yields {'view1', 'view2': (B, C, H, W),
    'positions': (B,), 'keys': [case ids], 'slices': [slice index per sample]}.

    A (case, slice) pair is drawn uniformly over all slices of all cases (case probability
    proportional to its slice count along axis 0, then a uniform slice), with replacement and no
    foreground oversampling. An in-plane crop of ``patch_size`` is taken at a uniform position with
    nnU-Net's padding rule (``random_patch_start``; zero padding, which after nnU-Net's z-score is
    the mean intensity, as in the reference's ``pad_and_or_crop``). Both views are made from that
    one crop [code: dataset/chd.py prepare_contrast], each by its own call of ``view_transform``
    (numpy (1, C, H, W) -> (1, C, H, W), batchgenerators v1 layout). The label is
    p = (z_orig + 1) / Z_orig (``slice_position``).
    """

    def __init__(self, dataset, case_ids: Sequence[str], batch_size: int, patch_size: Sequence[int],
                 view_transform, slice_counts: Sequence[int] | None = None):
        case_ids = list(case_ids)
        if slice_counts is None:
            slice_counts = [int(dataset.load_case(key)[0].shape[1]) for key in case_ids]
        if len(slice_counts) != len(case_ids):
            raise ValueError(f"{len(slice_counts)} slice counts for {len(case_ids)} cases")
        super().__init__(dataset, batch_size, num_threads_in_multithreaded=1, seed_for_shuffle=None,
                         return_incomplete=False, shuffle=True, infinite=True,
                         sampling_probabilities=slice_sampling_probabilities(slice_counts))
        self.indices = case_ids
        self.slice_counts = [int(c) for c in slice_counts]
        if len(patch_size) != 2:
            raise ValueError(f"slices need a 2D patch size, got {list(patch_size)}")
        self.patch_size = [int(s) for s in patch_size]
        self.view_transform = view_transform

    def generate_train_batch(self) -> dict:
        keys = self.get_indices()
        views1, views2, positions, slices = [], [], [], []
        with threadpool_limits(limits=1, user_api=None):
            for key in keys:
                data, _seg, _prev, properties = self._data.load_case(key)
                n_slices = data.shape[1]
                # 2d does not resample axis 0 [spec 3.1]; anything else would make z_orig wrong
                cropped = properties["shape_after_cropping_and_before_resampling"][0]
                if n_slices != cropped:
                    raise ValueError(f"case {key}: {n_slices} preprocessed slices but {cropped} before resampling; "
                                     "slice positions need a configuration that keeps axis 0 (nnU-Net's 2d)")
                z = int(np.random.randint(n_slices))
                start = random_patch_start(data.shape[2:], self.patch_size)
                bbox = [[z, z + 1]] + [[s, s + p] for s, p in zip(start, self.patch_size)]
                crop = np.asarray(crop_and_pad_nd(data, bbox, 0), dtype=np.float32)[None, :, 0]  # (1, C, H, W)
                views1.append(self.view_transform(crop))
                views2.append(self.view_transform(crop))
                positions.append(slice_position_from_properties(properties, z))
                slices.append(z)
        return {"view1": torch.from_numpy(np.concatenate(views1)), "view2": torch.from_numpy(np.concatenate(views2)),
                "positions": torch.tensor(positions, dtype=torch.float32), "keys": list(keys), "slices": slices}


class PatchSampler(DataLoader):
    """Reconstruction methods: yields {'image': (B, C, *patch), 'keys': [case ids]} and, with ``corrupt``,
    'corrupted' (the network's input; 'image' is the target).

    A case is drawn uniformly with replacement and a patch uniformly inside it with nnU-Net's padding
    rule (``random_patch_start``, zero padding: the mean intensity after z-scoring), no foreground
    oversampling. ``augment(image, rng) -> image`` changes the patch (target and input alike: it runs
    before ``corrupt``), ``corrupt(image, rng) -> image`` makes the input. Both are numpy, per sample, with a generator seeded
    from numpy's global one, which batchgenerators reseeds in every worker.
    """

    def __init__(self, dataset, case_ids: Sequence[str], batch_size: int, patch_size: Sequence[int],
                 augment=None, corrupt=None):
        super().__init__(dataset, batch_size, num_threads_in_multithreaded=1, seed_for_shuffle=None,
                         return_incomplete=False, shuffle=True, infinite=True)
        self.indices = list(case_ids)
        self.patch_size = [int(s) for s in patch_size]
        self.augment, self.corrupt = augment, corrupt

    def generate_train_batch(self) -> dict:
        keys = self.get_indices()
        rng = np.random.default_rng(np.random.randint(0, 2 ** 31 - 1))
        images, corrupted = [], []
        with threadpool_limits(limits=1, user_api=None):
            for key in keys:
                data, _seg, _prev, _properties = self._data.load_case(key)
                start = random_patch_start(data.shape[1:], self.patch_size)
                bbox = [[s, s + p] for s, p in zip(start, self.patch_size)]
                image = np.asarray(crop_and_pad_nd(data, bbox, 0), dtype=np.float32)
                if self.augment is not None:
                    image = self.augment(image, rng)
                images.append(image)
                if self.corrupt is not None:
                    corrupted.append(self.corrupt(image, rng))
        batch = {"image": torch.from_numpy(np.stack(images)), "keys": list(keys)}
        if self.corrupt is not None:
            batch["corrupted"] = torch.from_numpy(np.stack(corrupted).astype(np.float32))
        return batch


def random_mirror(image: np.ndarray, rng: np.random.Generator, probability: float = 0.5) -> np.ndarray:
    """Mirror every spatial axis of (C, *spatial) with ``probability`` [code: nnssl MAE's batchgenerators
    MirrorTransform, p = 0.5 per axis]."""
    for axis in range(1, image.ndim):
        if rng.random() < probability:
            image = np.flip(image, axis)
    return np.ascontiguousarray(image)
