"""Input normalisation statistics, and which ones pretrained weights expect."""

from __future__ import annotations

# torchvision's ImageNet statistics (RGB, on [0, 1] inputs): what its VGG16 weights were
# trained with (``VGG16_Weights.IMAGENET1K_V1.transforms()``). The Caffe reference instead
# subtracts a BGR mean from [0, 255] inputs; that pairing belongs to the Caffe weights only.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
