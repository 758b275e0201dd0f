"""segkit: classic semantic segmentation papers as a Lightning + Hydra experiment framework."""

__version__ = "0.1.0"

from segkit.resolvers import register as _register_resolvers

_register_resolvers()
