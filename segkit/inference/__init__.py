"""Prediction on images of any size: sliding windows with blending, and the U-Net's overlap-tile."""

from segkit.inference.tiling import blend_weights, overlap_tile, sliding_window_logits

__all__ = ["blend_weights", "overlap_tile", "sliding_window_logits"]
