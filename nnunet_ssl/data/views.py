"""Augmented views: batchgeneratorsv2 transforms (the ones nnU-Net itself uses) for 3D patches;
batchgenerators v1 transforms with the reference's exact arguments for PCL's 2D slices."""
import warnings
from typing import Sequence

import numpy as np
from batchgenerators.transforms import abstract_transforms as v1_abstract
from batchgenerators.transforms import spatial_transforms as v1_spatial
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


# PCL's 2D augmentation, verbatim from the reference [code: dataset/chd.py:91-109, same in acdc.py:87-105]
PCL_2D_ELASTIC_ALPHA = (100.0, 350.0)
PCL_2D_ELASTIC_SIGMA = (14.0, 17.0)
PCL_2D_ANGLE_X = (0.0, 2.0 * np.pi)
PCL_2D_ANGLE_YZ = (-0.000001, 0.00001)  # passed by the reference; batchgenerators ignores them in 2D
PCL_2D_SCALE = (0.7, 1.3)
PCL_2D_P_SPATIAL = 0.67


class PCLSliceViews:
    """One PCL view of a 2D crop, with batchgenerators **v1** as in the reference.

    Input and output: numpy float32 in v1's layout (b, c, x, y), here (1, C, H, W). The pipeline is
    the reference's ``Compose([MirrorTransform((0, 1)), RndTransform(SpatialTransform(...),
    prob=0.67, alternative_transform=RandomCropTransform(patch))])``; its alternative is a no-op on a
    crop of the patch size and is left out. Nothing else (no intensity augmentation). The input is
    copied first: v1's mirroring works in place (in the reference the second view therefore starts
    from the first view's mirrored crop; composing two independent random flips is again a uniform
    random flip, so the views' joint distribution is the same).

    ``mirror_axes=()`` and ``p_spatial=0`` give the identity (used by tests).
    """

    def __init__(self, patch_size: Sequence[int], p_spatial: float = PCL_2D_P_SPATIAL,
                 mirror_axes: tuple[int, ...] = (0, 1), angle_x: tuple[float, float] = PCL_2D_ANGLE_X,
                 scale: tuple[float, float] = PCL_2D_SCALE, alpha: tuple[float, float] = PCL_2D_ELASTIC_ALPHA,
                 sigma: tuple[float, float] = PCL_2D_ELASTIC_SIGMA):
        if len(patch_size) != 2:
            raise ValueError(f"PCL slice views are 2D, got patch size {list(patch_size)}")
        self.patch_size = [int(s) for s in patch_size]
        self.p_spatial = float(p_spatial)
        self.mirror = v1_spatial.MirrorTransform(tuple(mirror_axes)) if mirror_axes else None
        # the reference's positional arguments, by name [code: dataset/chd.py:103-107]
        self.spatial = v1_spatial.SpatialTransform(
            self.patch_size, patch_center_dist_from_border=list(np.array(self.patch_size) // 2),
            do_elastic_deform=True, alpha=tuple(alpha), sigma=tuple(sigma),
            do_rotation=True, angle_x=tuple(angle_x), angle_y=PCL_2D_ANGLE_YZ, angle_z=PCL_2D_ANGLE_YZ,
            do_scale=True, scale=tuple(scale), border_mode_data="constant", border_cval_data=0, order_data=3,
            border_mode_seg="constant", border_cval_seg=0, order_seg=0, random_crop=False)
        with warnings.catch_warnings():  # v1 marks RndTransform deprecated (in favour of p_per_sample)
            warnings.simplefilter("ignore", DeprecationWarning)
            self.maybe_spatial = v1_abstract.RndTransform(self.spatial, prob=self.p_spatial)

    def __call__(self, data: np.ndarray) -> np.ndarray:
        if data.ndim != 4 or list(data.shape[2:]) != self.patch_size:
            raise ValueError(f"expected (b, c, {self.patch_size[0]}, {self.patch_size[1]}), got {data.shape}")
        data_dict = {"data": np.array(data, dtype=np.float32, copy=True)}
        if self.mirror is not None:
            data_dict = self.mirror(**data_dict)
        # np.random.uniform() < 0.67, then the SpatialTransform: the reference's random draws, in order
        data_dict = self.maybe_spatial(**data_dict)
        return data_dict["data"]


def pcl_slice_view_transform(patch_size: Sequence[int], p_spatial: float = PCL_2D_P_SPATIAL,
                             scaling: tuple[float, float] = PCL_2D_SCALE,
                             rotation_degrees: float = 180.0) -> PCLSliceViews:
    """PCL's 2D view transform. ``rotation_degrees`` 180 (the default) is the reference's
    U(0, 2 pi); smaller values give U(-r, r) (an ablation, not PCL)."""
    angle = PCL_2D_ANGLE_X if rotation_degrees >= 180 else (-np.deg2rad(rotation_degrees),
                                                              np.deg2rad(rotation_degrees))
    return PCLSliceViews(patch_size, p_spatial=p_spatial, angle_x=angle, scale=tuple(scaling))


def instance_view_transform(patch_size: Sequence[int]) -> BasicTransform:
    """One view for instance discrimination (MoCo v2, BYOL) of a 3D patch [assumption: the papers' 2D
    recipe, random resized crop + colour jitter + flip, translated to 3D with the transforms this plugin
    already uses]: PCL's spatial view (rotation about array axis 0, scaling 0.7-1.3, mirroring of axes 1
    and 2) followed by MLSSCL's intensity jitter and noise (and its in-plane mirroring, which adds nothing)."""
    from nnunet_ssl.data.clip_sampler import clip_view_transform  # clip_sampler imports nothing from here
    return ComposeTransforms([pcl_view_transform(patch_size, 0), clip_view_transform()])


def instance_view_sampler(cases, case_ids, batch_size: int, patch_size: Sequence[int]):
    """Two views of one uniformly placed patch per case (``TwoViewPatchSampler``; positions unused), from a
    crop large enough for the rotation and the smallest scale of ``instance_view_transform``."""
    from nnunet_ssl.data.positions import rotation_safe_crop_size
    from nnunet_ssl.data.sampler import TwoViewPatchSampler
    crop = rotation_safe_crop_size(patch_size, 0, 0.7)
    return TwoViewPatchSampler(cases, case_ids, batch_size, patch_size, crop, instance_view_transform(patch_size), 0)
