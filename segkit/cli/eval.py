"""``segkit-eval``: evaluate a checkpoint on the val or test split.

Prints a per-class IoU and Dice table and writes ``metrics.json`` (``mIoU``, ``mDice``,
``pixel_acc``, ``mean_acc``, ``fwIoU``, ``per_class_IoU``, ``per_class_Dice``, ``class_names``,
``confusion_matrix``) into its own run directory, with ``confusion_matrix.png``,
``per_class_iou.png``, ``per_image.csv``, ``per_image_confusion.npz`` and ``worst_images.png``
(:mod:`segkit.scoring.eval_files`; each image is scored in the same pass). Examples::

    segkit-eval ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt
    segkit-eval ckpt_path=... split=test data.batch_size=32
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from segkit.cli.config_dir import config_dir
from segkit.cli.errors import SegkitError, exit_on_user_error
from segkit.inference.tta import tta_from_config
from segkit.models.loading import load_module
from segkit.scoring.eval_files import write_eval_files
from segkit.scoring.metrics import SCALAR_SCORES
from segkit.training.per_image import PerImageScores
from segkit.trust import check_config_targets

SPLITS = ("val", "test")


def _data_overrides() -> list[str]:
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    return [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] == "data"]


def data_config(cfg: DictConfig) -> DictConfig:
    """The data config: the training run's (``<run>/.hydra/config.yaml``) with the user's
    ``data.*`` overrides applied; ``cfg.data`` if the user chose ``data=...`` or the run's
    config is not beside the checkpoint."""
    run_config = Path(cfg.ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"
    overrides = _data_overrides()
    if any(o.split("=")[0].lstrip("+~") == "data" for o in overrides) or not run_config.is_file():
        return cfg.data
    trained = OmegaConf.load(run_config)
    # A run directory may come from someone else: its config may name segkit's classes only.
    check_config_targets(OmegaConf.to_container(trained.data, resolve=False), f"{run_config} (data)")
    dotted = OmegaConf.from_dotlist([o.lstrip("+") for o in overrides if not o.startswith("~")])
    # Put into (a copy of) cfg so that interpolations such as ${paths.data_dir} resolve against
    # it; replaced, not merged: the run's data may have keys eval.yaml's default lacks (data.root).
    base = OmegaConf.merge(cfg)
    with open_dict(base):
        base.data = trained.data
    return OmegaConf.merge(base, dotted).data


def per_class_table(names: list[str], ious: list[float], dice: list[float], title: str) -> Table:
    table = Table(title=title)
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("Dice", justify="right")
    for name, iou, d in zip(names, ious, dice):
        table.add_row(name, *("absent" if math.isnan(v) else f"{v:.4f}" for v in (iou, d)))
    return table


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; return and save the scores."""
    if cfg.split not in SPLITS:
        raise SegkitError(f"split={cfg.split}: choose one of {', '.join(SPLITS)}")
    L.seed_everything(cfg.seed, workers=True)
    module = load_module(cfg.ckpt_path)
    module.test_time_augmentation = tta_from_config(cfg.inference.tta, cfg.inference.scales)
    datamodule = instantiate(data_config(cfg))
    if datamodule.num_classes != module.num_classes:
        raise SegkitError(
            f"ckpt_path={cfg.ckpt_path}: the model predicts {module.num_classes} classes but "
            f"data={type(datamodule).__name__} has {datamodule.num_classes}; evaluate on the data it was trained on"
        )
    # Scores each image in the same pass (the step's predictions): per_image.csv, the gallery.
    worst_k = int(OmegaConf.select(cfg, "figures.worst_k", default=8))
    per_image = PerImageScores(module.num_classes, module.ignore_index, worst_k=worst_k)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, callbacks=[per_image])
    run = trainer.validate if cfg.split == "val" else trainer.test
    run(module, datamodule=datamodule, verbose=False)
    metric = module.val_metrics if cfg.split == "val" else module.test_metrics
    # The module resets its metric after logging; the logged values are in callback_metrics.
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    prefix = cfg.split
    result: dict[str, Any] = {key: logged[f"{prefix}/{key}"] for key in SCALAR_SCORES}
    for per_class in ("IoU", "Dice"):
        result[f"per_class_{per_class}"] = {name: logged[f"{prefix}/{per_class}/{name}"] for name in metric.class_names}
    result.update(split=cfg.split, ckpt_path=str(Path(cfg.ckpt_path).resolve()))
    # Counts, rows = truth, columns = prediction, ignored pixels left out: the sum of the
    # per-image matrices in per_image_confusion.npz, and what every score above comes from.
    result.update(class_names=list(metric.class_names), confusion_matrix=per_image.total.tolist())
    result.update(tta=cfg.inference.tta, scales=list(module.test_time_augmentation.scales))
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:  # under DDP every rank holds the same synced scores
        output_dir.mkdir(parents=True, exist_ok=True)
        # allow_nan: an absent class has IoU NaN, written as NaN (Python's json reads it back).
        (output_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        console = Console()
        console.print(per_class_table(metric.class_names, list(result["per_class_IoU"].values()),
                                      list(result["per_class_Dice"].values()), f"{prefix} scores per class"))
        console.print(f"mIoU {result['mIoU']:.4f}  mDice {result['mDice']:.4f}  pixel acc {result['pixel_acc']:.4f}  mean acc {result['mean_acc']:.4f}  f.w. IoU {result['fwIoU']:.4f}")
        # The gallery undoes the input normalisation: the data's, else the checkpoint's.
        normalization = getattr(module, "input_normalization", None) or {}
        mean, std = (getattr(datamodule, key, None) for key in ("mean", "std"))
        if mean is None or std is None:
            mean, std = normalization.get("mean"), normalization.get("std")
        written = [output_dir / "metrics.json"]
        if per_image.table is not None:  # None only if no batch was scored
            written += write_eval_files(output_dir, per_image.table, per_image.worst if worst_k > 0 else None,
                                        metric.class_names, cfg.split, module.ignore_index, mean, std)
        for path in written:  # plain print: one line per file, however long the path
            print(f"wrote {path}", flush=True)
    return result


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@exit_on_user_error("segkit-eval")
def main(cfg: DictConfig) -> float:
    """Console entry point; returns the mIoU."""
    return evaluate(cfg)["mIoU"]


if __name__ == "__main__":
    main()
