"""Boxes that paste one patch into another: CutMix (UniMatch) and bidirectional copy-paste (BCP), 2d and 3d.

A box is a bool mask of the patch's spatial shape, True where the content comes from the *other*
patch; ``paste`` applies it to images, labels and confidence maps alike, so pseudo-labels stay on the
voxels they were predicted for. Pure numpy (boxes) and torch (pasting).
"""
import numpy as np
import torch

CUTMIX_PROBABILITY = 0.5  # [code: UniMatch obtain_cutmix_box(p=0.5)]
CUTMIX_AREA = (0.02, 0.4)  # box area as a fraction of the image [code: UniMatch size_min=0.02, size_max=0.4]
CUTMIX_RATIO = (0.3, 1 / 0.3)  # side ratio [code: UniMatch ratio_1=0.3, ratio_2=1/0.3]
COPY_PASTE_SIDE = 2 / 3  # each side of BCP's box [code: BCP generate_mask, int(img_x * 2 / 3); paper: beta = 2/3]


def cutmix_box(shape: tuple[int, ...], rng: np.random.Generator, probability: float = CUTMIX_PROBABILITY,
               area: tuple[float, float] = CUTMIX_AREA, ratio: tuple[float, float] = CUTMIX_RATIO,
               max_tries: int = 1000) -> np.ndarray:
    """UniMatch's CutMix box for a patch of ``shape`` (2d or 3d); all False with probability 1 - ``probability``.

    2d, as ``obtain_cutmix_box`` [code: UniMatch]: box area ``s = U(area) * H * W``, ``r = U(ratio)``,
    sides ``h = int(sqrt(s r))`` (first axis), ``w = int(sqrt(s / r))``, a corner drawn uniformly in the
    patch, both redrawn until the box fits. Non-square patches use their own H * W (UniMatch's images are
    square). 3d [assumption, the same rule one axis up]: volume ``s = U(area) * prod(shape)``, one ratio
    ``r_k = U(ratio)`` per further axis, sides proportional to ``(1, 1/r_1, 1/r_2)`` with product ``s``.
    """
    box = np.zeros(shape, dtype=bool)
    if rng.random() >= probability:
        return box
    size = rng.uniform(*area) * float(np.prod(shape))
    for _ in range(max_tries):
        ratios = rng.uniform(*ratio, size=len(shape) - 1)
        relative = np.concatenate(([1.0], 1.0 / ratios))
        first = (size / np.prod(relative)) ** (1 / len(shape))
        sides = [int(first * r) for r in relative]
        corner = [int(rng.integers(0, s)) for s in shape]
        if all(c + side <= s for c, side, s in zip(corner, sides, shape)):
            box[tuple(slice(c, c + side) for c, side in zip(corner, sides))] = True
            return box
    return box  # practically unreachable (a ratio near 1 always fits): no box rather than an endless loop


def copy_paste_box(shape: tuple[int, ...], rng: np.random.Generator, side: float = COPY_PASTE_SIDE) -> np.ndarray:
    """BCP's box: ``int(side * n)`` voxels along each axis, its corner drawn uniformly from
    ``[0, n - int(side * n))`` [code: BCP ``generate_mask`` (ACDC, 2d) and ``context_mask`` (LA, 3d)].
    True inside the box (BCP's ``img_mask`` is its complement: 1 outside, 0 inside)."""
    sides = [int(side * s) for s in shape]
    corner = [int(rng.integers(0, max(s - b, 1))) for s, b in zip(shape, sides)]
    box = np.zeros(shape, dtype=bool)
    box[tuple(slice(c, c + b) for c, b in zip(corner, sides))] = True
    return box


def paste(into: torch.Tensor, source: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``source`` inside each sample's box, ``into`` elsewhere. ``into``/``source`` are (B, ...) batches
    with or without a channel axis; ``boxes`` is (B, *spatial) bool, broadcast over channels."""
    if boxes.shape[0] != into.shape[0] or boxes.shape[1:] != into.shape[-(boxes.ndim - 1):]:
        raise ValueError(f"boxes {tuple(boxes.shape)} do not fit the batch {tuple(into.shape)}")
    mask = boxes.to(into.device)
    if into.ndim == boxes.ndim + 1:
        mask = mask[:, None]
    return torch.where(mask, source, into)


def boxes_for_batch(box, batch_size: int, spatial_shape: tuple[int, ...], rng: np.random.Generator,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """One box per sample, drawn by ``box(shape, rng)``, as a (B, *spatial) bool tensor."""
    return torch.from_numpy(np.stack([box(tuple(spatial_shape), rng) for _ in range(batch_size)])).to(device)
