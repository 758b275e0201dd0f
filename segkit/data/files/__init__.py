"""Users' files on disk: pairing images with masks, reading every format and bit depth, masks of every kind, intensity scaling, the preflight checks and the audit."""
