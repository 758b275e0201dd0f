"""Renderers of two synthetic data sets unlike segkit's built-in ``shapes`` (pure numpy + scipy).

*Folder scenes* (:func:`render_folder_scene`): 8-bit RGB images whose two sides are drawn
independently in 80..220 px, 4 classes, for ``data=folder``:

==========  ==========================================  ===================================
class       shape                                       texture (two random colours)
==========  ==========================================  ===================================
background  whole image                                 smooth noise blended with wavy
                                                        stripes, period 9-16, brightness ramp
star        5-8 points, outer radius 12-32,             pinwheel of 6-12 angular sectors
            inner 0.4-0.55 x outer
crescent    disc, radius 14-30, less an offset disc     thin hatching, period 4, random angle
blob        wobbly polygon: radius 14-30 with           leopard spots (smooth noise of 4-px
            harmonics 2..5                              cells, thresholded)
==========  ==========================================  ===================================

By default every object has its own two random colours, so colour never gives the class (the
hard variant). With ``class_colours=True`` each class keeps one hue family, jittered per object
(:data:`CLASS_HUES`), as stained or photographed classes usually look; the background's colours
stay random, so a background can take an object's hue;
shapes and textures are the same in both variants. Half of the objects
after the first are placed against an earlier one (they touch or overlap; later ones occlude
earlier ones). Pixels within 1 px of a change of object (a 2-px band across every object
boundary, between two objects too) are :data:`IGNORE_INDEX`.

*Nuclei* (:func:`render_nuclei`): 16-bit fluorescence-like images of wobbly ellipses (radius
6-14 px), many touching, each with its own brightness (log-uniform 2500..22000) and chromatin
texture, on an uneven background (200-400 plus a 600-2500 ramp), blurred, with Poisson and
Gaussian noise; and their instance labels. Touching nuclei share a border with no gap.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

FOLDER_CLASS_NAMES: tuple[str, ...] = ("background", "star", "crescent", "blob")
IGNORE_INDEX = 255
SIDE_RANGE = (80, 220)
_MIN_CONTRAST = 0.35  # RGB distance of an object's first colour to the background's mean
# Base RGB of star, crescent, blob with class_colours=True; each object jitters it (sd 0.15).
CLASS_HUES: tuple[tuple[float, float, float], ...] = ((0.9, 0.35, 0.2), (0.3, 0.75, 0.3), (0.3, 0.4, 0.9))


def _interpolation_matrix(size: int, cells: int, cell: float) -> np.ndarray:
    """(size, cells) weights that interpolate a grid with ``cell``-px spacing, smoothstep-eased."""
    pos = np.arange(size, dtype=np.float32) / np.float32(cell)
    low = pos.astype(np.intp)
    frac = pos - low
    frac = frac * frac * (3.0 - 2.0 * frac)
    weights = np.zeros((size, cells), np.float32)
    weights[np.arange(size), low] = 1.0 - frac
    weights[np.arange(size), low + 1] = frac
    return weights


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Value noise in [0, 1]: a random grid with ``cell``-px spacing, interpolated (separably)."""
    gh, gw = int(height / cell) + 2, int(width / cell) + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    out = _interpolation_matrix(height, gh, cell) @ grid @ _interpolation_matrix(width, gw, cell).T
    lo, hi = out.min(), out.max()
    return (out - lo) / (hi - lo + 1e-9)


def separated_foreground(instances: np.ndarray) -> np.ndarray:
    """Foreground of an instance-label image with touching instances separated: a pixel is
    foreground if its id is nonzero and no other nonzero id lies in its 3x3 neighbourhood.

    Example:
        >>> inst = np.array([[1, 1, 2, 2, 0, 3, 3]])
        >>> separated_foreground(inst).astype(int).tolist()
        [[1, 0, 0, 1, 0, 1, 1]]
    """
    ids = instances.astype(np.int64)
    high = ndimage.maximum_filter(ids, size=3, mode="nearest")
    # Background reads as one more than the largest id (not int64's max: scipy's filter overflows).
    low = ndimage.minimum_filter(np.where(ids > 0, ids, ids.max() + 1), size=3, mode="nearest")
    return (ids > 0) & (high == ids) & (low == ids)


def _offsets(cy: float, cx: float, ext: float, height: int, width: int
             ) -> tuple[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] | None:
    """The box ``(y0, y1, x0, x1)`` within ``ext`` px of ``(cy, cx)``, clipped to the image, and
    the row/column offsets of its pixels from the centre; ``None`` when the box is empty."""
    y0, y1 = max(0, math.floor(cy - ext)), min(height, math.ceil(cy + ext) + 1)
    x0, x1 = max(0, math.floor(cx - ext)), min(width, math.ceil(cx + ext) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    return (y0, y1, x0, x1), (dy, dx)


def _pick_colour(rng: np.random.Generator, ref: np.ndarray, min_dist: float) -> np.ndarray:
    """Random RGB colour at least ``min_dist`` from ``ref`` (best of 16 tries)."""
    cand = rng.random((16, 3), dtype=np.float32)
    dist = np.linalg.norm(cand - ref, axis=1)
    ok = np.flatnonzero(dist >= min_dist)
    return cand[ok[0] if ok.size else int(dist.argmax())]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    c0, c1 = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
    angle, period = rng.uniform(0, math.pi), rng.uniform(9.0, 16.0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * u / period + 4.0 * smooth_noise(rng, height, width, 40.0))
    t = 0.55 * smooth_noise(rng, height, width, rng.uniform(15.0, 35.0)) + 0.45 * stripes
    ramp = (u - u.mean()) / max(height, width) * rng.uniform(0.0, 0.4)
    return c0 + (c1 - c0) * t[..., None] + ramp[..., None]


def _object(cls: int, rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """``(inside, texture)`` of class ``cls`` on offsets from its centre; texture in [0, 1]."""
    r, theta = np.hypot(dy, dx), np.arctan2(dy, dx)
    spin = rng.uniform(0, 2 * math.pi)
    if cls == 1:  # star: radius interpolated linearly in angle between tips and valleys
        points = int(rng.integers(5, 9))
        phase = np.mod(points * (theta - spin) / (2 * math.pi), 1.0)
        edge = size * (1.0 - (1.0 - rng.uniform(0.4, 0.55)) * (1.0 - np.abs(2.0 * phase - 1.0)))
        sectors = int(rng.integers(3, 7))
        return r <= edge, (np.sin(2 * sectors * (theta - spin) + 1.0) > 0).astype(np.float32)
    if cls == 2:  # crescent
        shift, ratio = size * rng.uniform(0.35, 0.6), rng.uniform(0.75, 0.95)
        oy, ox = shift * math.sin(spin), shift * math.cos(spin)
        inside = (r <= size) & (np.hypot(dy - oy, dx - ox) > ratio * size)
        a = rng.uniform(0, math.pi)
        u = dx * math.cos(a) + dy * math.sin(a)
        return inside, (np.mod(u / 4.0 + rng.random(), 1.0) < 0.4).astype(np.float32)
    # blob
    edge = np.full_like(r, size)
    for k in range(2, 6):
        edge += size * rng.uniform(0.0, 0.22 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    noise = smooth_noise(rng, dy.shape[0], dx.shape[1], 4.0)
    return r <= edge, (noise > np.median(noise)).astype(np.float32)


def render_folder_scene(rng: np.random.Generator, class_colours: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One folder scene: ``(uint8 H x W x 3 image, uint8 H x W mask)``, sides in :data:`SIDE_RANGE`;
    ``class_colours`` gives each class a hue family (see the module docstring).

    Example:
        >>> image, mask = render_folder_scene(np.random.default_rng(0))
        >>> image.dtype, mask.dtype, image.shape[:2] == mask.shape, image.shape[2]
        (dtype('uint8'), dtype('uint8'), True, 3)
        >>> bool(np.isin(mask, [0, 1, 2, 3, IGNORE_INDEX]).all())
        True
    """
    height, width = (int(s) for s in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, size=2))
    img = _background(rng, height, width)
    bg_mean = img.reshape(-1, 3).mean(axis=0)
    label = np.zeros((height, width), np.uint8)
    instances = np.zeros((height, width), np.int32)
    placed: list[tuple[float, float, float]] = []
    for index in range(1, int(rng.integers(1, 7)) + 1):
        cls = int(rng.integers(1, len(FOLDER_CLASS_NAMES)))
        size = rng.uniform(12.0, 32.0) if cls == 1 else rng.uniform(14.0, 30.0)
        if placed and rng.random() < 0.5:
            py, px, ps = placed[int(rng.integers(len(placed)))]
            angle, dist = rng.uniform(0, 2 * math.pi), (ps + size) * rng.uniform(0.55, 0.95)
            cy, cx = py + dist * math.sin(angle), px + dist * math.cos(angle)
        else:
            cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
        placed.append((cy, cx, size))
        window = _offsets(cy, cx, 1.7 * size + 1, height, width)
        if window is None:
            continue
        (y0, y1, x0, x1), (dy, dx) = window
        dy, dx = np.broadcast_arrays(dy, dx)
        inside, t = _object(cls, rng, dy, dx, size)
        if class_colours:
            col_a = np.clip(np.asarray(CLASS_HUES[cls - 1], np.float32) + rng.normal(0, 0.15, 3), 0, 1)
            col_b = col_a * np.float32(rng.uniform(0.45, 0.7))  # a darker shade of the same hue
        else:
            col_a = _pick_colour(rng, bg_mean, _MIN_CONTRAST)
            col_b = _pick_colour(rng, col_a, 0.4)
        colour = col_a + (col_b - col_a) * t[..., None] + rng.normal(0, 0.03, 3).astype(np.float32)
        img[y0:y1, x0:x1][inside] = colour[inside]
        label[y0:y1, x0:x1][inside] = cls
        instances[y0:y1, x0:x1][inside] = index
    img = ndimage.gaussian_filter(img, sigma=(0.6, 0.6, 0))
    img += rng.normal(0.0, rng.uniform(0.015, 0.035), img.shape).astype(np.float32)
    band = ndimage.maximum_filter(instances, size=3) != ndimage.minimum_filter(instances, size=3)
    label[band] = IGNORE_INDEX
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), label


def _partition_nuclei(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """int32 instance labels of wobbly ellipses; overlaps go to the nearer centre (in units of
    each nucleus's own radius), so touching nuclei share a border with no gap."""
    best = np.full((height, width), np.inf, np.float32)
    instances = np.zeros((height, width), np.int32)
    centres: list[tuple[float, float, float]] = []
    wanted = int(rng.integers(25, 45) * height * width / (192 * 176))
    for _ in range(wanted * 20):
        if len(centres) >= wanted:
            break
        r = rng.uniform(6.0, 14.0)
        if centres and rng.random() < 0.6:
            py, px, pr = centres[int(rng.integers(len(centres)))]
            angle, dist = rng.uniform(0, 2 * math.pi), (pr + r) * rng.uniform(0.75, 0.95)
            cy, cx = py + dist * math.sin(angle), px + dist * math.cos(angle)
        else:
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        if any(math.hypot(cy - y, cx - x) < 0.72 * (r + q) for y, x, q in centres):
            continue
        centres.append((cy, cx, r))
        stretch, tilt = rng.uniform(1.0, 1.3), rng.uniform(0, math.pi)
        window = _offsets(cy, cx, r * stretch * 1.25 + 1, height, width)
        if window is None:
            continue
        (y0, y1, x0, x1), (dy, dx) = window
        u = dx * math.cos(tilt) + dy * math.sin(tilt)
        v = dy * math.cos(tilt) - dx * math.sin(tilt)
        rho = np.hypot(u / (r * stretch), v * stretch / r)
        theta = np.arctan2(v, u)
        wobble = np.ones_like(rho)
        for k in (2, 3, 4, 5):
            wobble += rng.uniform(0.0, 0.06) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
        rho = rho / wobble
        win_best, win_inst = best[y0:y1, x0:x1], instances[y0:y1, x0:x1]
        take = (rho < 1.0) & (rho < win_best)
        win_best[take], win_inst[take] = rho[take], len(centres)
    return instances


def _clean_instances(instances: np.ndarray) -> np.ndarray:
    """Make each instance one 4-connected region whose separated foreground is one piece
    (overlaps can leave slivers: they become background), then renumber the ids 1..N."""
    instances = instances.copy()
    for _ in range(4):
        changed = False
        for index, box in enumerate(ndimage.find_objects(instances), start=1):
            if box is not None:
                own = instances[box] == index
                parts, count = ndimage.label(own)
                if count > 1:
                    instances[box][own & (parts != np.bincount(parts[own]).argmax())] = 0
                    changed = True
        fg = separated_foreground(instances)
        pieces, count = ndimage.label(fg)
        owner = np.zeros(count + 1, np.int64)
        owner[pieces[fg]] = instances[fg]
        sizes = np.bincount(pieces[fg], minlength=count + 1)
        largest = np.zeros(int(instances.max()) + 1, np.int64)
        for piece in np.argsort(-sizes[1:], kind="stable") + 1:
            largest[owner[piece]] = largest[owner[piece]] or piece
        keep_piece = largest[owner] == np.arange(count + 1)
        # Slivers of foreground, and instances left without any, become background.
        drop = (fg & ~keep_piece[pieces]) | ((instances > 0) & (largest[instances] == 0))
        if drop.any():
            instances[drop] = 0
        elif not changed:
            break
    ids = np.unique(instances[instances > 0])
    lookup = np.zeros(int(instances.max()) + 1, np.int32)
    lookup[ids] = np.arange(1, ids.size + 1)
    return lookup[instances]


def render_nuclei(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One nuclei image: ``(uint16 image, uint16 instance labels)``, 0 = background, 1..N.

    Example:
        >>> image, inst = render_nuclei(np.random.default_rng(0), 96, 80)
        >>> image.dtype, inst.dtype, image.shape, bool(image.max() > 255), bool(inst.max() > 3)
        (dtype('uint16'), dtype('uint16'), (96, 80), True, True)
    """
    instances = _clean_instances(_partition_nuclei(rng, height, width))
    count = int(instances.max())
    brightness = np.concatenate([[0.0], np.exp(rng.uniform(math.log(2500), math.log(22000), count))])
    chromatin = 0.75 + 0.5 * smooth_noise(rng, height, width, 3.0)
    signal = brightness[instances] * chromatin
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width]
    ramp = xx * math.cos(angle) + yy * math.sin(angle)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    background = rng.uniform(200, 400) + rng.uniform(600, 2500) * ramp + 300 * smooth_noise(rng, height, width, 40.0)
    signal = ndimage.gaussian_filter(signal, 1.0) + background
    gain = rng.uniform(2.0, 6.0)  # grey levels per photon
    noisy = rng.poisson(signal / gain) * gain + rng.normal(0.0, 40.0, signal.shape)
    return np.clip(noisy, 0, 65535).astype(np.uint16), instances.astype(np.uint16)
