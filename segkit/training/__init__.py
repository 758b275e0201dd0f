"""A training run and its plumbing around Lightning: the run (:mod:`~segkit.training.run`), its
directory and record (:mod:`~segkit.training.run_dir`, :mod:`~segkit.training.run_record`),
callbacks (image grid, budget-end validation, early stopping, an EMA of the weights:
:mod:`~segkit.training.early_stopping`, :mod:`~segkit.training.weight_averaging`) and
checkpointing (atomic writes, last.ckpt every N steps, exact resume)."""
