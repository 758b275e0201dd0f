"""``segkit-bench sweep``: workers' busy fraction (async against batch), pruning, a killed worker."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from segkit.benchmarks.sweeps import measure_killed_worker, measure_pruning, measure_schedules

PARTS = ("schedules", "pruning", "killed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sweep (Optuna sweeps of segkit-train trials on this machine)")
    group.add_argument("--sweep-parts", nargs="+", default=list(PARTS), choices=PARTS, metavar="PART",
                       help=f"of: {', '.join(PARTS)}")
    group.add_argument("--sweep-dir", type=Path, help="where the sweeps go (default: a new temporary folder)")


def right_aligned(title: str, *columns: str) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    return table


def sweep(args: argparse.Namespace, console: Console) -> dict[str, object]:
    directory = args.sweep_dir or Path(tempfile.mkdtemp(prefix="segkit-sweep-"))
    console.print(f"sweep: segkit-train -m hparams_search=optuna, one CPU thread per worker; work in {directory}")
    results: dict[str, object] = {}
    if "schedules" in args.sweep_parts:
        with console.status("sweep: 8 trials of 20-200 steps on 2 workers, async then batch"):
            runs = measure_schedules(directory)
        table = right_aligned("2 workers, 8 trials of uneven length (trainer.max_steps 20..200)",
                              "schedule", "wall s", "trial s", "worker s", "busy fraction")
        for run in runs:
            table.add_row(run.schedule, f"{run.wall_s:.1f}", f"{run.trial_s:.1f}", f"{run.worker_s:.1f}",
                          f"{run.busy_fraction:.3f}")
        console.print(table)
        console.print(f"max_steps drawn: {', '.join(f'{r.schedule} {r.max_steps}' for r in runs)}")
        results["schedules"] = [run.__dict__ for run in runs]
    if "pruning" in args.sweep_parts:
        with console.status("sweep: 16 trials with and without the median pruner"):
            runs = measure_pruning(directory)
        table = right_aligned("One worker, 16 random-sampled trials of 160 steps, without and with pruning",
                              "pruner", "pruned", "best val/mIoU", "compute s", "compute s to the unpruned best")
        for run in runs:
            reached = "not reached" if run.to_target_s is None else f"{run.to_target_s:.1f}"
            table.add_row(run.pruner, str(run.pruned), f"{run.best:.4f}", f"{run.compute_s:.1f}", reached)
        console.print(table)
        results["pruning"] = [run.__dict__ for run in runs]
    if "killed" in args.sweep_parts:
        with console.status("sweep: a worker killed mid-trial"):
            run = measure_killed_worker(directory)
        console.print(f"killed worker: trial {run.trial}'s worker SIGKILLed once its last.ckpt was at step "
                      f"{run.killed_at_step}; its replacement continued the trial from step "
                      f"{run.continued_from_step}; value {run.value:.6f} vs never stopped {run.reference_value:.6f}; "
                      f"final weights identical: [bold]{run.same_weights}[/bold]")
        results["killed"] = run.__dict__
    return results
