"""A synthetic electron-microscopy membrane data set, in the spirit of the ISBI 2012 EM
segmentation challenge (pure numpy + scipy): 8-bit grey images of a tissue section and masks
with 255 = cell interior, 0 = membrane.

What :func:`render_em` draws, per image:

- *Cells*: a Voronoi tessellation of jittered-grid sites (cell diameter 25-60 px, one draw per
  image), computed on coordinates displaced by smooth noise (three octaves: about a cell, half
  a cell, 7-10 px), so cell boundaries wobble instead of running straight.
- *Membranes*: the pixels within half a thickness of the (displaced) bisector of a pixel's two
  nearest sites. Each boundary has its own thickness (2-4 px, around a per-image base chosen so
  that about 13-20 % of pixels are membrane) and darkness (darkest along the middle), and a smooth
  field along the membranes fades them to 15 % contrast in places: gaps and low-contrast runs.
- *Interiors*: mid grey, each cell with its own brightness offset, a fine grain (1.5-2.5 px)
  and a coarser mottle (5-8 px).
- *Organelles*: in 30-60 % of the cells, one dark ellipse (semi-axes 3-10 px and 2.5-9 px, at
  least 2 px clear of the membrane), half of them with a darker 1.3-px outline round a lighter
  fill, like mitochondria. They are interior (255) in the mask: distractors that look like
  membrane.
- Then a slow illumination gradient (a ramp plus very coarse noise), a Gaussian blur
  (sigma 0.8-1.2) and Gaussian noise (sd 3.5-5 % of full scale).

:func:`write_em_dataset` writes such images as a ``data=folder`` tree of PNGs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from segkit.benchmarks.userdata_render import smooth_noise

__all__ = ["render_em", "write_em_dataset"]

DIAMETER_RANGE = (25.0, 60.0)
THICKNESS_RANGE = (2.0, 4.0)
_MIN_ORGANELLE_CLEARANCE = 2.0  # px of interior between an organelle and the nearest membrane


def _sites(rng: np.random.Generator, height: int, width: int, spacing: float) -> np.ndarray:
    """(N, 2) jittered-grid sites covering the image and one spacing round it."""
    ys = np.arange(-spacing, height + 2 * spacing, spacing)
    xs = np.arange(-spacing, width + 2 * spacing, spacing)
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    grid[:, 1] += np.where(np.round(grid[:, 0] / spacing) % 2 == 1, spacing / 2, 0.0)  # hexagonal-ish rows
    return grid + rng.uniform(-0.35, 0.35, grid.shape) * spacing


def _pair_table(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """A symmetric (n, n) table of uniform draws: one value per boundary (unordered pair of cells)."""
    table = np.triu(rng.uniform(low, high, (n, n)).astype(np.float32))
    return table + np.triu(table, 1).T


def _tessellate(rng: np.random.Generator, height: int, width: int, diameter: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, nearest-but-one label, distance to the bisector)``, all (H, W), on coordinates
    displaced by smooth noise; labels index the sites (0..N-1)."""
    spacing = diameter * math.sqrt(math.pi) / 2  # a site per spacing**2: the area of a disc of this diameter
    sites = _sites(rng, height, width, spacing)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    coarse_amp, coarse_cell = rng.uniform(0.10, 0.17) * diameter, rng.uniform(0.9, 1.3) * diameter
    mid_amp, mid_cell = rng.uniform(0.04, 0.07) * diameter, rng.uniform(0.35, 0.5) * diameter
    fine_amp, fine_cell = rng.uniform(0.6, 1.2), rng.uniform(7.0, 10.0)
    for grid in (yy, xx):
        for amp, cell in ((coarse_amp, coarse_cell), (mid_amp, mid_cell), (fine_amp, fine_cell)):
            grid += amp * (2 * smooth_noise(rng, height, width, cell) - 1)
    points = np.stack([yy.ravel(), xx.ravel()], axis=1)
    dist, index = cKDTree(sites).query(points, k=2)
    first, second = index[:, 0], index[:, 1]
    gap = np.linalg.norm(sites[first] - sites[second], axis=1)
    bisector = (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2 * gap)  # distance to the two sites' bisector
    shape = (height, width)
    return first.reshape(shape), second.reshape(shape), bisector.reshape(shape).astype(np.float32)


def _organelles(rng: np.random.Generator, labels: np.ndarray, interior: np.ndarray, image: np.ndarray) -> None:
    """Darken one ellipse in some cells of ``image`` (in place), clear of the membrane."""
    clearance = ndimage.distance_transform_edt(interior)
    share = rng.uniform(0.3, 0.6)
    for cell, box in enumerate(ndimage.find_objects(labels + 1)):
        if box is None or rng.random() >= share:
            continue
        a = rng.uniform(3.0, 10.0)
        b = max(2.5, a * rng.uniform(0.45, 0.9))
        dark, outline, tilt = rng.uniform(0.18, 0.38), rng.random() < 0.5, rng.uniform(0, math.pi)
        ys, xs = np.nonzero((labels[box] == cell) & (clearance[box] > a + _MIN_ORGANELLE_CLEARANCE))
        if ys.size == 0:
            continue
        pick = int(rng.integers(ys.size))
        cy, cx = ys[pick] + box[0].start, xs[pick] + box[1].start
        r = math.ceil(a) + 1
        y0, y1 = max(0, cy - r), min(labels.shape[0], cy + r + 1)
        x0, x1 = max(0, cx - r), min(labels.shape[1], cx + r + 1)
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        u = dx * math.cos(tilt) + dy * math.sin(tilt)
        v = dy * math.cos(tilt) - dx * math.sin(tilt)
        rho = np.hypot(u / a, v / b)
        inside = rho <= 1.0
        shade = np.where(inside, dark, 0.0)
        if outline:  # a darker rim round a lighter fill
            shade = np.where(inside, dark * 0.55, 0.0) + np.where(inside & (rho > 1.0 - 1.3 / b), dark * 0.75, 0.0)
        image[y0:y1, x0:x1] -= shade.astype(np.float32)


def render_em(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One EM-like image: ``(uint8 (H, W) image, uint8 (H, W) mask)``, mask 255 = cell interior
    (organelles included), 0 = membrane; see the module docstring for what is drawn.

    Example:
        >>> image, mask = render_em(np.random.default_rng(0), 96, 80)
        >>> image.dtype, mask.dtype, image.shape, mask.shape
        (dtype('uint8'), dtype('uint8'), (96, 80), (96, 80))
        >>> sorted(np.unique(mask).tolist())
        [0, 255]
        >>> bool(image[mask == 0].mean() < image[mask == 255].mean())
        True
    """
    diameter = rng.uniform(*DIAMETER_RANGE)
    labels, neighbours, bisector = _tessellate(rng, height, width, diameter)
    n = int(max(labels.max(), neighbours.max())) + 1
    # Boundaries of thickness t between cells of diameter d cover about 2t/d of the image (x1.1 for the wobble).
    fraction = rng.uniform(0.15, 0.22)
    base = float(np.clip(fraction * diameter / 2.2, *THICKNESS_RANGE))
    thickness = np.clip(_pair_table(rng, n, 0.8, 1.2) * base, *THICKNESS_RANGE)[labels, neighbours]
    half = thickness / 2
    membrane = bisector < half

    level = rng.uniform(0.55, 0.7)
    image = (level + rng.normal(0.0, 0.035, n).astype(np.float32)[labels]
             + rng.uniform(0.08, 0.14) * (smooth_noise(rng, height, width, rng.uniform(1.5, 2.5)) - 0.5)
             + rng.uniform(0.04, 0.08) * (smooth_noise(rng, height, width, rng.uniform(5.0, 8.0)) - 0.5))
    _organelles(rng, labels, ~membrane, image)

    darkness = rng.uniform(0.42, 0.55) * _pair_table(rng, n, 0.65, 1.0)[labels, neighbours]
    field = smooth_noise(rng, height, width, rng.uniform(10.0, 20.0))
    fade = 0.15 + 0.85 * np.clip((field - rng.uniform(0.2, 0.3)) / 0.2, 0.0, 1.0)  # gaps where the field is low
    profile = 1.0 - 0.3 * (bisector / np.maximum(half, 1e-3)) ** 2  # darkest along the middle
    image -= np.where(membrane, darkness * fade * profile, 0.0).astype(np.float32)

    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / max(height, width)
    image += rng.uniform(0.04, 0.12) * (ramp - ramp.mean())
    image += rng.uniform(0.04, 0.08) * (smooth_noise(rng, height, width, rng.uniform(60.0, 100.0)) - 0.5)
    image = ndimage.gaussian_filter(image, sigma=rng.uniform(0.8, 1.2))
    image += rng.normal(0.0, rng.uniform(0.035, 0.05), image.shape).astype(np.float32)
    mask = np.where(membrane, 0, 255).astype(np.uint8)
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), mask


def write_em_dataset(root: Path, seed: int = 0, train: int = 24, val: int = 8,
                     size_range: tuple[int, int] = (160, 224)) -> Path:
    """Write ``root/{train,val}/{images,masks}/em_<i>.png`` (8-bit grey images, 8-bit 0/255
    masks), each image's height and width drawn independently from ``size_range`` (inclusive);
    returns root. Refuses (:class:`~segkit.errors.SegkitError`) a root that is not empty.

    Train with ``segkit-train data=folder data.root=ROOT data.num_classes=2 data.in_channels=1
    data.mask_type=binary`` (binary: 0 = class 0, membrane; non-zero = class 1, interior).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = write_em_dataset(Path(tempfile.mkdtemp()) / "em", train=2, val=1, size_range=(64, 72))
        >>> sorted(p.name for p in (root / "train" / "masks").iterdir())
        ['em_0000.png', 'em_0001.png']
        >>> image = Image.open(root / "val" / "images" / "em_0000.png")
        >>> image.mode, all(64 <= side <= 72 for side in image.size)
        ('L', True)
    """
    from PIL import Image

    from segkit.benchmarks.userdata import _new_tree, _split_rngs

    root = _new_tree(root)
    low, high = size_range
    for split, i, rng in _split_rngs(seed, (train, val)):
        height, width = (int(s) for s in rng.integers(low, high + 1, size=2))
        image, mask = render_em(rng, height, width)
        Image.fromarray(image).save(root / split / "images" / f"em_{i:04d}.png")
        Image.fromarray(mask).save(root / split / "masks" / f"em_{i:04d}.png")
    return root
