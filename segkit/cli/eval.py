"""``segkit-eval``: evaluate a checkpoint on the val or test split.

Prints a per-class IoU and Dice table and writes ``metrics.json`` into its own run directory,
in the schema of training's (:mod:`segkit.training.run_record`: the scores under the split,
``record["val"]["mIoU"]``, ``record["val"]["IoU"][<class>]``, ...), plus ``ckpt_path``,
``split``, ``class_names``, ``confusion_matrix``, ``tta`` and ``scales``. Beside it:
``confusion_matrix.png``, ``per_class_iou.png``, ``per_image.csv``, ``per_image_confusion.npz``
and ``worst_images.png`` (:mod:`segkit.scoring.eval_files`; each image is scored in the same
pass). Several checkpoints (a list or a glob pattern) are scored as one ensemble, the mean of
their softmax probabilities (:mod:`segkit.models.ensemble`), on the first's data. Examples::

    segkit-eval ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt
    segkit-eval ckpt_path=... split=test data.batch_size=32
    segkit-eval ckpt_path='[fold0.ckpt,fold1.ckpt,fold2.ckpt]' split=test
    segkit-eval ckpt_path='logs/train/multiruns/<time>/*/checkpoints/last.ckpt' split=test
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from segkit.cli.common import trained_normalization
from segkit.cli.errors import SegkitError, exit_on_user_error
from segkit.cli.eval_data import data_config
from segkit.config_dir import config_dir
from segkit.data.base import SegmentationDataModule
from segkit.errors import shown
from segkit.inference.tta import tta_from_config
from segkit.models.base import SegmentationModule
from segkit.models.ensemble import EnsembleModule
from segkit.models.loading import check_ensemble, checkpoint_paths, load_module, read_checkpoint
from segkit.scoring.eval_files import write_eval_files
from segkit.training.object_scores import ObjectScores, has_instances
from segkit.training.per_image import PerImageScores
from segkit.training.run_dir import RunDirectory
from segkit.training.provenance import collect_provenance, start_git_probes
from segkit.training.run_record import eval_record

__all__ = ["data_config", "evaluate", "main"]

SPLITS = ("val", "test")


def per_class_table(names: list[str], ious: list[float], dice: list[float], title: str) -> Table:
    table = Table(title=title)
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("Dice", justify="right")
    for name, iou, d in zip(names, ious, dice):
        table.add_row(name, *("absent" if math.isnan(v) else f"{v:.4f}" for v in (iou, d)))
    return table


def ensemble_model(cfg: DictConfig, paths: list[str]) -> tuple[EnsembleModule, DictConfig, SegmentationDataModule]:
    """The models of ``paths`` as one :class:`EnsembleModule`, with the data (the first's run's)
    it is scored on; refused, before the data is built, if the models disagree on classes,
    channels (:func:`check_ensemble`), data set or intensity scaling."""
    check_ensemble(paths)
    data_cfg = data_config(cfg, paths)
    modules = [load_module(path) for path in paths]
    normalizations = [trained_normalization(module, path) for module, path in zip(modules, paths)]
    known = [(path, n) for path, n in zip(paths, normalizations) if n is not None]
    for path, normalization in known[1:]:
        first, reference = known[0]
        if normalization.intensity != reference.intensity:
            raise SegkitError(
                f"ckpt_path: {shown(first)} was trained with data.intensity {reference.intensity.to_dict()} but "
                f"{shown(path)} with {normalization.intensity.to_dict()}; segkit-eval scales the data once for all "
                "models: ensemble models trained with the same scaling (segkit-predict applies each model's own)"
            )
    datamodule = instantiate(data_cfg)
    return EnsembleModule(modules, normalizations, datamodule.mean, datamodule.std), data_cfg, datamodule


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` (one checkpoint, or several: their ensemble) on ``cfg.split``;
    return and save the run record (the scores: ``record[cfg.split]``)."""
    started = time.monotonic()
    git_probes = start_git_probes()  # answers while the checkpoint loads (segkit.training.provenance)
    if cfg.split not in SPLITS:
        raise SegkitError(f"split={cfg.split}: choose one of {', '.join(SPLITS)}")
    L.seed_everything(cfg.seed, workers=True)
    paths = checkpoint_paths(cfg.ckpt_path)
    module: SegmentationModule
    if len(paths) == 1:
        module = load_module(paths[0])
        data_cfg = data_config(cfg, paths)
        datamodule = instantiate(data_cfg)
    else:
        module, data_cfg, datamodule = ensemble_model(cfg, paths)
    module.test_time_augmentation = tta_from_config(cfg.inference.tta, cfg.inference.scales)
    if datamodule.num_classes != module.num_classes:
        raise SegkitError(
            f"ckpt_path={cfg.ckpt_path}: the model predicts {module.num_classes} classes but "
            f"data={type(datamodule).__name__} has {datamodule.num_classes}; evaluate on the data it was trained on"
        )
    # The ISBI scores follow the data evaluated on (data.em_scores), not the training data's choice.
    module.data_spec = replace(module.data_spec, membrane_class=datamodule.membrane_class) if module.data_spec else None
    # Scores each image in the same pass (the step's predictions): per_image.csv, the gallery.
    worst_k = int(OmegaConf.select(cfg, "figures.worst_k", default=8))
    per_image = PerImageScores(module.num_classes, module.ignore_index, worst_k=worst_k)
    callbacks: list[L.Callback] = [per_image]
    # Instance masks: objects scored in the same pass (metrics.json "objects", per_image.csv columns).
    objects = ObjectScores() if has_instances(datamodule) else None
    callbacks += [objects] if objects is not None else []
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, callbacks=callbacks)
    run = trainer.validate if cfg.split == "val" else trainer.test
    run(module, datamodule=datamodule, verbose=False)
    metric = module.val_metrics if cfg.split == "val" else module.test_metrics
    # The module resets its metric after logging; the logged values are in callback_metrics.
    # A best-so-far (val/mIoU_best) means nothing for one evaluation.
    prefix = f"{cfg.split}/"
    scores = {k: float(v) for k, v in trainer.callback_metrics.items()
              if k.startswith(prefix) and k != f"{prefix}mIoU_best"}
    # One checkpoint: its path, step and epoch; an ensemble: lists of them, in its order.
    checkpoints = [read_checkpoint(Path(path)) for path in paths]
    steps, epochs = [c.get("global_step") for c in checkpoints], [c.get("epoch") for c in checkpoints]
    resolved = [str(Path(path).resolve()) for path in paths]
    one = len(paths) == 1
    record = eval_record(
        cfg, module, OmegaConf.select(data_cfg, "_target_"), steps[0] if one else steps, epochs[0] if one else epochs,
        scores, time.monotonic() - started,
        ckpt_path=resolved[0] if one else resolved, split=cfg.split, class_names=list(metric.class_names),
        # Counts, rows = truth, columns = prediction, ignored pixels left out: the sum of the
        # per-image matrices in per_image_confusion.npz, and what every score comes from.
        confusion_matrix=per_image.total.tolist(),
        tta=cfg.inference.tta, scales=list(module.test_time_augmentation.scales),
        provenance=collect_provenance(trainer, git_probes) if trainer.is_global_zero else {},
    )
    if objects is not None:
        record[cfg.split]["objects"] = {key: value for key, value in objects.total.scores().items()}
    if trainer.is_global_zero:  # under DDP every rank holds the same synced scores
        output_dir = RunDirectory(Path(cfg.paths.output_dir))
        written = [output_dir.write_record(record)]
        split = record[cfg.split]
        console = Console()
        console.print(per_class_table(metric.class_names, list(split["IoU"].values()),
                                      list(split["Dice"].values()), f"{cfg.split} scores per class"))
        if objects is not None:
            found = split["objects"]
            console.print(f"objects (IoU > 0.5): F1 {found['f1']:.4f}  precision {found['precision']:.4f}  "
                          f"recall {found['recall']:.4f}  AP50 {found['ap50']:.4f}  mean AP (0.5-0.95) {found['mean_ap']:.4f}")
        console.print(f"mIoU {split['mIoU']:.4f}  mDice {split['mDice']:.4f}  pixel acc {split['pixel_acc']:.4f}  mean acc {split['mean_acc']:.4f}  f.w. IoU {split['fwIoU']:.4f}")
        # The gallery undoes the input normalisation: the data's, else the checkpoint's.
        mean, std = datamodule.mean, datamodule.std
        if mean is None or std is None:
            stored = module.input_normalization()
            mean, std = stored.get("mean"), stored.get("std")
        if per_image.table is not None:  # None only if no batch was scored
            written += write_eval_files(output_dir.path, per_image.table, per_image.worst if worst_k > 0 else None,
                                        metric.class_names, cfg.split, module.ignore_index, mean, std,
                                        objects.rows() if objects is not None else None)
        for path in written:  # plain print: one line per file, however long the path
            print(f"wrote {path}", flush=True)
    return record


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@exit_on_user_error("segkit-eval")
def main(cfg: DictConfig) -> float:
    """Console entry point; returns the mIoU."""
    return evaluate(cfg)[cfg.split]["mIoU"]


if __name__ == "__main__":
    main()
