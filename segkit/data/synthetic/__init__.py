"""The renderers of the built-in synthetic data sets (shapes scenes, EM-like slices) and the dataset that serves rendered samples."""
