"""Training plumbing around Lightning: callbacks (image grid, budget-end validation) and
checkpointing (atomic writes, last.ckpt every N steps, exact resume)."""
