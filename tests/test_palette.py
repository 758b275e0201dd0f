"""Label colours: the PASCAL VOC colour map, so masks look as people expect."""

from __future__ import annotations

import torch

from segkit.palette import colorize, voc_palette


def test_voc_palette_has_the_well_known_colours() -> None:
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == torch.uint8
    assert palette[0].tolist() == [0, 0, 0]  # background
    assert palette[1].tolist() == [128, 0, 0]  # aeroplane
    assert palette[2].tolist() == [0, 128, 0]  # bicycle
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[255].tolist() == [224, 224, 192]  # void / ignore
    assert len({tuple(c) for c in palette.tolist()}) == 256  # every index its own colour


def test_colorize_maps_each_pixel_to_its_class_colour() -> None:
    mask = torch.tensor([[0, 1], [255, 2]])
    image = colorize(mask)
    assert image.shape == (3, 2, 2) and image.dtype == torch.uint8
    palette = voc_palette()
    for y in range(2):
        for x in range(2):
            assert image[:, y, x].tolist() == palette[mask[y, x]].tolist()
