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

from nnunet_ssl.data.positions import crop_around_patch, position_from_properties, random_patch_start


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
