"""Anatomical position axes resolved from the image direction and nnU-Net's transpose, and the
retrieval metric logged during PCL pretraining."""
import itertools

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_ssl.blocks.health import top1_positive_retrieval
from nnunet_ssl.data.positions import ANATOMICAL_AXES, preprocessed_axis
from nnunet_ssl.errors import SSLUserError
from nnunet_ssl.methods import DataGeometry
from nnunet_ssl.methods.pcl import resolve_position_axis


def _array_axis_along(image: sitk.Image, physical_axis: int) -> int:
    """Brute force: the numpy axis along which stepping one voxel moves most along a physical axis."""
    origin = np.array(image.TransformIndexToPhysicalPoint((0, 0, 0)))
    moves = []
    for index_axis in range(3):
        step = [0, 0, 0]
        step[index_axis] = 1
        moves.append(abs((np.array(image.TransformIndexToPhysicalPoint(step)) - origin)[physical_axis]))
    return 2 - int(np.argmax(moves))  # numpy holds the index axes reversed


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("transpose", [[0, 1, 2], [2, 0, 1], [1, 2, 0]])
def test_preprocessed_axis_matches_the_geometry_of_a_real_image(permutation, transpose):
    image = sitk.Image(4, 5, 6, sitk.sitkFloat32)
    matrix = np.zeros((3, 3))
    for column, row in enumerate(permutation):
        matrix[row, column] = -1.0 if column == 1 else 1.0  # a flip must not matter
    image.SetDirection(matrix.flatten().tolist())
    for name, physical in ANATOMICAL_AXES.items():
        expected = transpose.index(_array_axis_along(image, physical))
        assert preprocessed_axis(name, image.GetDirection(), transpose) == expected


def test_identity_direction_puts_superior_inferior_on_array_axis_0():
    assert preprocessed_axis("SI", np.eye(3).flatten(), [0, 1, 2]) == 0
    assert preprocessed_axis("LR", np.eye(3).flatten(), [0, 1, 2]) == 2


def _geometry(directions):
    return DataGeometry([16, 16, 16], [4, 4, 4], [[40, 40, 40]] * len(directions), None, directions, [0, 1, 2])


def test_resolution_errors_are_clear():
    with pytest.raises(SSLUserError, match="needs each image's direction"):
        resolve_position_axis("SI", DataGeometry([16] * 3, [4] * 3, [[40] * 3], None, None, [0, 1, 2]))
    swapped = np.eye(3)[:, [2, 1, 0]].flatten().tolist()
    with pytest.raises(SSLUserError, match="different array axes"):
        resolve_position_axis("SI", _geometry([np.eye(3).flatten().tolist(), swapped]))
    with pytest.raises(SSLUserError, match="unknown anatomical axis"):
        resolve_position_axis("XY", _geometry([np.eye(3).flatten().tolist()]))
    assert resolve_position_axis(2, _geometry([None])) == 2


def test_top1_retrieval_counts_nearest_neighbours_that_are_positives():
    embeddings = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    pairs = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert top1_positive_retrieval(embeddings, pairs) == 1.0
    crossed = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    assert top1_positive_retrieval(embeddings, crossed) == 0.0
