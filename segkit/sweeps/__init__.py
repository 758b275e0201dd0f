"""Optuna studies shared by sweep workers: where a study is stored, how a trial's process finds
its trial (pruning), and which trials a new worker continues. Needs ``optuna`` (``segkit[sweep]``)."""
