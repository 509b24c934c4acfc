"""Augmented views, built from batchgeneratorsv2 transforms (the ones nnU-Net itself uses)."""
from typing import Sequence

import numpy as np
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms


class RotationAboutAxis:
    """batchgeneratorsv2 angle sampler: uniform in +-max_radians about one axis, 0 about the others
    (angle i of SpatialTransform rotates about array axis i). A class so workers can pickle it."""

    def __init__(self, axis: int, max_radians: float):
        self.axis, self.max_radians = axis, max_radians

    def __call__(self, image=None, dim: int = 0) -> float:
        return float(np.random.uniform(-self.max_radians, self.max_radians)) if dim == self.axis else 0.0


def pcl_view_transform(patch_size: Sequence[int], position_axis: int, rotation_degrees: float = 180.0,
                       p_spatial: float = 0.67, scaling: tuple[float, float] = (0.7, 1.3)) -> BasicTransform:
    """One PCL view of an already cropped (larger) patch: rotation about the position axis and
    scaling about the patch centre, centre crop to ``patch_size``, mirroring on every axis except
    the position axis.

    PCL 2D rotates in-plane by U(0, 2 pi) and scales by U(0.7, 1.3), together with elastic
    deformation at p = 0.67, mirrors only in-plane and uses no intensity augmentation [code:
    dataset/chd.py:91-109]. For 3D patches the "plane" is the one across the position axis, so a
    view's position stays its label [spec 3.3]; rotation and scaling each fire with p = 0.67
    independently (batchgeneratorsv2 has no joint switch); elastic deformation is off (nnU-Net
    turns it off for cost; assumption). The centre crop keeps the patch centre.
    """
    mirror_axes = tuple(a for a in range(len(patch_size)) if a != position_axis)
    return ComposeTransforms([
        SpatialTransform(tuple(patch_size), patch_center_dist_from_border=0, random_crop=False,
                         p_rotation=p_spatial, rotation=RotationAboutAxis(position_axis,
                                                                          np.deg2rad(rotation_degrees)),
                         p_scaling=p_spatial, scaling=scaling, p_synchronize_scaling_across_axes=1),
        MirrorTransform(allowed_axes=mirror_axes),
    ])
