"""Console entry points: thin wrappers that compose a config, instantiate and call."""
