"""Numpy/scipy renderer of synthetic electron-microscopy slices like ISBI 2012's.

The ISBI 2012 challenge images (serial-section TEM of a Drosophila ventral nerve cord,
512x512 px at 4x4 nm) show cell profiles 40-90 px across, separated by thin dark membranes
2-6 px wide, and full of dark organelles (mitochondria, vesicles) that are *not* membrane.
:func:`render_em_slice` draws such a slice in this order:

===================  ==========================================================
step                 how
===================  ==========================================================
cells                Voronoi tessellation of a jittered grid of seeds
                     (``cell_size`` apart, some dropped, a few extra), found
                     with a Euclidean distance transform
membranes            pixels closer to a cell border than a half width that
                     varies per cell and smoothly along the border; full
                     widths span ``membrane_width``
organelles           dark ellipses (mitochondria-like, darker rim) and small
                     dots (vesicles) kept clear of the membranes: label 0
warp                 a smooth random displacement of the cell map bends the
                     straight Voronoi edges (nearest-pixel lookup)
appearance           per-cell grey level, smooth and granular texture, blur,
                     a large-scale illumination gradient and pixel noise
===================  ==========================================================

Sizes are absolute pixels (ISBI's resolution), not scaled with the image: a 128 px render
looks like a 128 px crop of an ISBI slice. Label 1 is membrane, 0 is everything else.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from segkit.data.synthetic.shapes_render import _upsample_bilinear

EM_CLASS_NAMES: tuple[str, ...] = ("cell", "membrane")
MEMBRANE = 1
_ORGANELLES_PER_CELL = 1.0  # mitochondria-like ellipses per cell on average
_VESICLE_DENSITY = 1.5e-3  # vesicle dots per pixel


def _smooth_field(rng: np.random.Generator, height: int, width: int, period: float) -> np.ndarray:
    """Smooth noise in [0, 1] that varies over about ``period`` pixels."""
    gh = max(2, math.ceil(height / period) + 1)
    gw = max(2, math.ceil(width / period) + 1)
    return _upsample_bilinear(rng.random((gh, gw), dtype=np.float32), height, width)


def _cells(rng: np.random.Generator, height: int, width: int, spacing: float) -> np.ndarray:
    """Voronoi cell index per pixel for a jittered grid of seeds (plus a few random ones)."""
    ny, nx = math.ceil(height / spacing) + 1, math.ceil(width / spacing) + 1
    gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    jitter = rng.uniform(-0.4, 0.4, size=(2, ny, nx))
    ys = ((gy + 0.5 * (gx % 2) + jitter[0]) * spacing - spacing / 2).ravel()
    xs = ((gx + jitter[1]) * spacing).ravel()
    # Dropped seeds merge cells into large ones, extra seeds split off small ones.
    keep = rng.random(ys.size) >= 0.2
    extra = max(1, round(0.2 * ys.size))
    ys = np.concatenate([ys[keep], rng.uniform(0, height, extra)])
    xs = np.concatenate([xs[keep], rng.uniform(0, width, extra)])
    iy = np.clip(np.round(ys).astype(np.intp), 0, height - 1)
    ix = np.clip(np.round(xs).astype(np.intp), 0, width - 1)
    seeds = np.zeros((height, width), np.int32)
    seeds[iy, ix] = np.arange(1, iy.size + 1, dtype=np.int32)  # a repeated pixel keeps one id
    nearest = ndimage.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
    return seeds[nearest[0], nearest[1]] - 1


def _borders(cells: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour in another cell (both sides of every border)."""
    border = np.zeros(cells.shape, bool)
    dy = cells[1:] != cells[:-1]
    dx = cells[:, 1:] != cells[:, :-1]
    border[1:] |= dy
    border[:-1] |= dy
    border[:, 1:] |= dx
    border[:, :-1] |= dx
    return border


def _organelles(rng: np.random.Generator, clearance: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark ellipses away from membranes: ``(coverage in [0, 1], darker-rim weight)``."""
    height, width = clearance.shape
    cover = np.zeros((height, width), np.float32)
    rim = np.zeros((height, width), np.float32)
    placed = 0
    for _ in range(4 * count):  # a few tries per organelle: many spots are too near a membrane
        if placed == count:
            break
        a = rng.uniform(4.0, 14.0)
        b = a * rng.uniform(0.35, 0.8)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        if clearance[int(cy), int(cx)] < a + 3.0:
            continue  # would touch a membrane: real mitochondria sit inside the cell
        placed += 1
        angle = rng.uniform(0.0, math.pi)
        y0, y1 = max(0, int(cy - a) - 1), min(height, int(cy + a) + 2)
        x0, x1 = max(0, int(cx - a) - 1), min(width, int(cx + a) + 2)
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        u = (dx * math.cos(angle) + dy * math.sin(angle)) / a
        v = (dy * math.cos(angle) - dx * math.sin(angle)) / b
        r = np.sqrt(u * u + v * v)
        inside = (r <= 1.0).astype(np.float32)
        np.maximum(cover[y0:y1, x0:x1], inside * rng.uniform(0.75, 1.0), out=cover[y0:y1, x0:x1])
        np.maximum(rim[y0:y1, x0:x1], inside * (r > 0.7), out=rim[y0:y1, x0:x1])
    return cover, rim


def render_em_slice(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    cell_size: float = 56.0,
    membrane_width: tuple[float, float] = (2.0, 6.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic EM slice and its membrane mask.

    Args:
        rng: Source of all randomness; the same generator state gives the same slice
            bit for bit.
        height: Image height in pixels.
        width: Image width in pixels.
        cell_size: Typical distance between cell centres in pixels (each slice draws its
            own within +-20%); ISBI's cells are 40-90 px across.
        membrane_width: Range of the full membrane width in pixels (at least 2).

    Returns:
        ``(image, mask)``: a float32 ``H x W`` grey image in ``[0, 1]`` and a uint8
        ``H x W`` mask, 1 = membrane and 0 = cell interior (organelles included).

    Example:
        >>> import numpy as np
        >>> image, mask = render_em_slice(np.random.default_rng(0), 64, 80)
        >>> image.shape, image.dtype, mask.shape, mask.dtype
        ((64, 80), dtype('float32'), (64, 80), dtype('uint8'))
        >>> bool(image.min() >= 0.0 and image.max() <= 1.0), sorted(np.unique(mask).tolist())
        (True, [0, 1])
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if cell_size < 4:
        raise ValueError(f"cell_size must be >= 4 px, got {cell_size}")
    lo, hi = membrane_width
    if not 2.0 <= lo <= hi:
        raise ValueError(f"membrane_width must be (lo, hi) with 2 <= lo <= hi, got {membrane_width}")
    spacing = cell_size * rng.uniform(0.8, 1.2)
    warp = 0.2 * spacing  # displacement amplitude: bends edges without folding cells
    pad = math.ceil(0.5 * spacing + warp)
    ch, cw = height + 2 * pad, width + 2 * pad

    cells = _cells(rng, ch, cw, spacing)
    distance = ndimage.distance_transform_edt(~_borders(cells)).astype(np.float32)
    # Half width per side of the border: one factor per cell times one varying along it.
    n_cells = int(cells.max()) + 1
    per_cell = rng.random(n_cells, dtype=np.float32)
    along = _smooth_field(rng, ch, cw, period=0.6 * spacing)
    half = np.float32(lo / 2) + np.float32((hi - lo) / 2) * (0.5 * per_cell[cells] + 0.5 * along)
    clearance = distance - half  # < -0.5: membrane (a border pixel has distance 0)

    # A smooth warp bends the straight Voronoi edges; nearest-pixel lookup keeps it cheap.
    shift_y = (_smooth_field(rng, height, width, period=0.7 * spacing) - 0.5) * np.float32(2 * warp)
    shift_x = (_smooth_field(rng, height, width, period=0.7 * spacing) - 0.5) * np.float32(2 * warp)
    iy = np.rint(np.arange(height, dtype=np.float32)[:, None] + np.float32(pad) + shift_y).astype(np.intp)
    ix = np.rint(np.arange(width, dtype=np.float32)[None, :] + np.float32(pad) + shift_x).astype(np.intp)
    flat = np.clip(iy, 0, ch - 1) * cw + np.clip(ix, 0, cw - 1)
    cells, clearance = cells.ravel()[flat], clearance.ravel()[flat]
    membrane = clearance < -0.5
    mask = membrane.astype(np.uint8)

    cover, rim = _organelles(rng, clearance, round(_ORGANELLES_PER_CELL * n_cells * height * width / (ch * cw)))
    image = rng.uniform(0.55, 0.75) + rng.uniform(-0.12, 0.12, n_cells).astype(np.float32)[cells]
    organelle_grey = np.float32(rng.uniform(0.2, 0.35))
    image = image * (1.0 - cover) + (organelle_grey - 0.1 * rim) * cover
    membrane_grey = np.float32(rng.uniform(0.1, 0.22)) + 0.12 * _smooth_field(rng, height, width, period=40.0)
    image = np.where(membrane, membrane_grey, image)

    # Cytoplasm texture: smooth mottling plus fine granules and vesicle dots, all label 0.
    inside = mask == 0
    grain = ndimage.gaussian_filter(rng.standard_normal((height, width), dtype=np.float32), 1.2)
    mottle = _smooth_field(rng, height, width, period=12.0) - 0.5
    image += inside * (0.12 * mottle + 0.1 * grain)
    n_vesicles = rng.poisson(_VESICLE_DENSITY * height * width)
    vy, vx = rng.integers(0, height, n_vesicles), rng.integers(0, width, n_vesicles)
    dots = np.zeros((height, width), np.float32)
    dots[vy, vx] = 1.0
    dots = ndimage.gaussian_filter(dots, 1.5) * np.float32(2 * math.pi * 1.5**2)
    image -= inside * np.minimum(dots, 1.0) * np.float32(rng.uniform(0.2, 0.35))

    image = ndimage.gaussian_filter(image, rng.uniform(0.7, 1.3))
    # Illumination: a linear ramp (its slope per 256 px, so small crops stay flat) and shading.
    angle = rng.uniform(0.0, 2.0 * math.pi)
    yy = np.arange(height, dtype=np.float32)[:, None] / max(height, width, 256)
    xx = np.arange(width, dtype=np.float32)[None, :] / max(height, width, 256)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) * np.float32(rng.uniform(-0.15, 0.15))
    shading = 0.85 + 0.3 * _smooth_field(rng, height, width, period=256.0)
    image = image * shading + ramp
    image += rng.standard_normal((height, width), dtype=np.float32) * np.float32(rng.uniform(0.02, 0.05))
    np.clip(image, 0.0, 1.0, out=image)
    return image.astype(np.float32, copy=False), mask
