"""A training run and its plumbing around Lightning: the run (:mod:`~segkit.training.run`), its
directory and record (:mod:`~segkit.training.run_dir`, :mod:`~segkit.training.run_record`),
callbacks (image grid, budget-end validation) and checkpointing (atomic writes, last.ckpt every
N steps, exact resume)."""
