"""Training crop sizes of :class:`segkit.data.modules.folder.FolderDataModule` (``data.crop_size``)."""

from __future__ import annotations

from collections.abc import Sequence

from segkit.errors import SegkitError


def auto_crop_size(sizes: Sequence[tuple[int, int]], largest: int = 96, multiple: int = 16) -> int:
    """A training crop that suits the images: the 25th percentile of their short sides,
    rounded down to a multiple of ``multiple`` (default 16: suits nets of up to four poolings),
    then kept between 32 and ``largest``.

    Crops larger than most images would be mostly ignore padding. ``largest`` keeps steps short
    and many in a time budget. On ~190-px nuclei images, 2 CPU minutes: 176-px crops took 285
    steps and scored 0.975; 128-px crops 559-625 steps and 0.975-0.981; 96-px crops 1017-1046
    steps and 0.983 twice, above a hand-written loop's 0.981-0.983. EM-like sections: 128 px
    0.907 twice, 96 px 0.909 twice (docs/learning.md). Give a larger ``data.crop_size`` for more
    context a step, e.g. 256 on a GPU.

    Example:
        >>> auto_crop_size([(90, 120), (150, 169), (100, 210), (220, 96)])
        96
        >>> auto_crop_size([(40, 50), (60, 70)]), auto_crop_size([(512, 512)] * 3)
        (32, 96)
    """
    shorts = sorted(min(height, width) for height, width in sizes)
    quartile = shorts[len(shorts) // 4]
    return max(32, min(largest, quartile // multiple * multiple))


def check_crop_size(crop_size: object) -> None:
    """Refuse a ``data.crop_size`` other than ``auto``, ``null`` or a size of 1 px or more.

    Example:
        >>> check_crop_size(0)
        Traceback (most recent call last):
        ...
        segkit.errors.SegkitError: data.crop_size=0: use a size in pixels, 1 or more (e.g. 256), auto ...
    """
    if crop_size is None or crop_size == "auto":
        return
    if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
        shown_value = repr(crop_size) if isinstance(crop_size, str) else crop_size
        raise SegkitError(
            f"data.crop_size={shown_value}: use a size in pixels, 1 or more (e.g. 256), auto (from the training "
            "images' sizes), or null (whole images, with data.batch_size=1)"
        )
