"""segkit's Optuna sweeper for Hydra (``hydra/sweeper=segkit_optuna``; needs ``optuna>=4``).

Failed or NaN trials are recorded as FAIL and the study goes on; the study lives in
``<sweep dir>/optuna.db`` by default, so a killed sweep continues where it stopped when the
same command runs again with ``hydra.sweep.dir=<that dir>``. See ``optuna_sweeper``.
"""
