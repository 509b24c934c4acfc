"""Models Genesis image corruptions (Zhou et al., MICCAI 2019 / MedIA 2021), as pure numpy functions.

Each takes an image (C, *spatial) scaled to [0, 1], as Models Genesis scales CT to [0, 1] before
corrupting it, and a ``numpy.random.Generator``; each returns a new array and never changes its
input. The numbers are those of the reference implementation [code: MrGiovanni/ModelsGenesis
pytorch/utils.py, pytorch/config.py]; Python's ``random.randint(a, b)`` includes b, so it is
``rng.integers(a, b + 1)`` here.
"""
from dataclasses import dataclass

import numpy as np
from scipy.special import comb

BEZIER_STEPS = 100000  # [code: nonlinear_transformation bezier_curve(points, nTimes=100000)]
REFERENCE_SHUFFLE_BLOCKS = 10000  # [code: local_pixel_shuffling num_block = 10000]
REFERENCE_PATCH_VOXELS = 64 * 64 * 32  # [code: config.py input_rows, input_cols, input_deps]


def bezier_curve(points: np.ndarray, steps: int = BEZIER_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """The Bezier curve of control points (n, 2) in the reference's parametrisation: the curve runs
    from the *last* control point (t = 0) to the first (t = 1) [code: bernstein_poly t^(n-i) (1-t)^i]."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points) - 1
    t = np.linspace(0.0, 1.0, steps)
    basis = np.array([comb(n, i) * t ** (n - i) * (1 - t) ** i for i in range(n + 1)])
    return points[:, 0] @ basis, points[:, 1] @ basis


def bezier_intensity(image: np.ndarray, points: np.ndarray, invert: bool, steps: int = BEZIER_STEPS) -> np.ndarray:
    """Non-linear intensity transform through a Bezier curve from (0, 0) to (1, 1).

    Monotonic (x and y of the curve both sorted), or with ``invert`` the reference's "flip": x sorted,
    y left in curve order, which mirrors the mapping (identity control points give 1 - x)
    [code: nonlinear_transformation].
    """
    xs, ys = bezier_curve(points, steps)
    xs = np.sort(xs)
    ys = ys if invert else np.sort(ys)
    return np.interp(image, xs, ys).astype(image.dtype)


def random_bezier_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two random inner control points in [0, 1)^2 and inversion with p = 0.5 [code]."""
    points = np.array([[0.0, 0.0], rng.random(2), rng.random(2), [1.0, 1.0]])
    return bezier_intensity(image, points, invert=bool(rng.random() < 0.5))


def shuffle_blocks_for(spatial_shape) -> int:
    """[assumption] The reference shuffles 10000 windows in a 64 x 64 x 32 patch; the same density for
    other patches: 10000 x voxels / (64 * 64 * 32), at least 1 (32 x 48 x 32 -> 3750)."""
    return max(1, round(REFERENCE_SHUFFLE_BLOCKS * int(np.prod(spatial_shape)) / REFERENCE_PATCH_VOXELS))


def local_pixel_shuffle(image: np.ndarray, rng: np.random.Generator, num_blocks: int) -> np.ndarray:
    """Shuffle the voxels inside ``num_blocks`` random windows of 1 .. extent // 10 voxels per axis
    [code: local_pixel_shuffling]. Windows are read from the original image (overlaps do not
    compound); all channels get the same permutation (the reference has one channel)."""
    result = image.copy()
    spatial = image.shape[1:]
    for _ in range(num_blocks):
        size = [int(rng.integers(1, max(1, e // 10) + 1)) for e in spatial]
        start = [int(rng.integers(0, e - s + 1)) for e, s in zip(spatial, size)]
        window = tuple(slice(a, a + s) for a, s in zip(start, size))
        block = image[(slice(None), *window)].reshape(image.shape[0], -1)
        permutation = rng.permutation(block.shape[1])
        result[(slice(None), *window)] = block[:, permutation].reshape(image.shape[0], *size)
    return result


def _box(rng: np.random.Generator, extents, low_high) -> tuple[slice, ...]:
    """A box of per-axis size drawn by ``low_high(extent)`` (inclusive bounds), at least 3 voxels from
    every border as in the reference (sizes clipped so that it fits small patches)."""
    box = []
    for extent in extents:
        low, high = low_high(extent)
        high = max(1, min(high, extent - 6))
        size = int(rng.integers(min(low, high), high + 1))
        start = int(rng.integers(3, max(3, extent - size - 3) + 1))
        box.append(slice(start, start + size))
    return tuple(box)


def inpaint(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inner cutout: up to 5 boxes (another one while a draw < 0.95) of extent/6 .. extent/3 per axis,
    filled with uniform noise in [0, 1) [code: image_in_painting]."""
    result = image.copy()
    for _ in range(5):
        if rng.random() >= 0.95:
            break
        box = _box(rng, image.shape[1:], lambda e: (e // 6, e // 3))
        result[(slice(None), *box)] = rng.random([s.stop - s.start for s in box])
    return result


def outpaint(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Outer cutout: uniform noise everywhere except one box, then up to 4 more (while a draw < 0.95), of
    extent - (3/7 .. 4/7 extent) per axis, that keep the original [code: image_out_painting]."""
    result = rng.random(image.shape).astype(image.dtype)
    size_range = lambda e: (e - 4 * e // 7, e - 3 * e // 7)  # noqa: E731  [code: e - randint(3e//7, 4e//7)]
    for i in range(5):
        if i > 0 and rng.random() >= 0.95:
            break
        box = (slice(None), *_box(rng, image.shape[1:], size_range))
        result[box] = image[box]
    return result


def genesis_flip(image: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
    """Up to 3 flips along random axes, another while a draw < ``probability`` [code: data_augmentation,
    which flips input and target together; here it runs before the corruption, which is the same]."""
    for _ in range(3):
        if rng.random() >= probability:
            break
        image = np.flip(image, int(rng.integers(0, image.ndim - 1)) + 1)
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class GenesisRates:
    """Probabilities of each corruption [code: config.py]; ``shuffle_blocks`` None = sized by the patch."""
    flip: float = 0.4
    local_shuffle: float = 0.5
    nonlinear: float = 0.9
    paint: float = 0.9
    inpaint: float = 0.2  # of the painted ones; the rest are outpainted (outpaint_rate 0.8)
    shuffle_blocks: int | None = None


def genesis_corrupt(image: np.ndarray, rng: np.random.Generator, rates: GenesisRates) -> np.ndarray:
    """The reference's order [code: generate_pair]: local shuffle, non-linear intensity, then in- or
    outpainting. ``image`` in [0, 1]."""
    x = image
    if rng.random() < rates.local_shuffle:
        x = local_pixel_shuffle(x, rng, rates.shuffle_blocks or shuffle_blocks_for(image.shape[1:]))
    if rng.random() < rates.nonlinear:
        x = random_bezier_intensity(x, rng)
    if rng.random() < rates.paint:
        x = inpaint(x, rng) if rng.random() < rates.inpaint else outpaint(x, rng)
    return x


def to_unit_range(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """[assumption] nnU-Net data are z-scored, Models Genesis expects [0, 1]: min-max per patch, with the
    range to map back (a constant patch maps to 0)."""
    low, high = float(image.min()), float(image.max())
    scale = high - low if high > low else 1.0
    return (image - low) / scale, low, scale
