"""``segkit-train``: compose a config, then fit (and test) a segmentation model.

The run itself is :func:`segkit.training.run.train`. Examples::

    segkit-train                                   # U-Net on the built-in shapes data
    segkit-train model.base_width=32 trainer.max_epochs=20
    segkit-train experiment=unet_shapes trainer=gpu
    segkit-train -m data.seed=1,2 debug=fdr        # a Hydra multirun
    segkit-train --help                            # config groups and options
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from segkit.cli.argv import hoist_multirun_flag, multirun_job_ranks
from segkit.cli.errors import exit_on_user_error
from segkit.config_dir import config_dir
from segkit.training.run import train

log = logging.getLogger("segkit.train")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error("segkit-train")
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task; returns the optimised metric for sweepers (e.g. Optuna)."""
    with multirun_job_ranks():
        metrics = train(cfg)
    summary = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("val/mIoU", "val/mIoU_best", "test/mIoU") if k in metrics)
    log.info("final metrics: %s", summary or "none (nothing validated)")
    if HydraConfig.initialized():
        log.info("run directory: %s", HydraConfig.get().runtime.output_dir)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


def main() -> None:
    """Console entry point ``segkit-train``."""
    sys.argv = hoist_multirun_flag(sys.argv)
    hydra_main()


if __name__ == "__main__":
    main()
