"""segkit: classic semantic segmentation papers as a Lightning + Hydra experiment framework."""

__version__ = "0.1.0"
