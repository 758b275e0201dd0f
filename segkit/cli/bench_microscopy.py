"""``segkit-bench large`` and ``segkit-bench objects``: the microscopy benchmarks (slides larger
than memory should allow; counting touching nuclei)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from segkit.benchmarks.lazy_memory import measure_large_predictions
from segkit.benchmarks.objects import SCORES, measure_objects


def large(args: argparse.Namespace, console: Console) -> dict[str, object]:
    directory = args.large_dir or Path(tempfile.mkdtemp(prefix="segkit-large-"))
    console.print(f"large: segkit-predict on {', '.join(f'{s}x{s}' for s in args.large_sizes)} 16-bit "
                  f"{' and '.join(args.large_kinds)} inputs, one process each, same model; work in {directory}")
    with console.status("large: writing inputs and predicting"):
        runs = measure_large_predictions(args.large_sizes, args.large_kinds, directory)
    table = Table(title=f"Peak resident memory of segkit-predict, {torch.get_num_threads()} CPU threads")
    for column in ("input", "size", "pixels (MiB)", "peak RSS (MiB)", "seconds", "labels read back"):
        table.add_column(column, justify="right")
    for run in runs:
        table.add_row(run.kind, f"{run.size}x{run.size}", f"{run.input_mib:.0f}", f"{run.peak_rss_mib:.0f}",
                      f"{run.seconds:.0f}", "ok" if run.labels_ok else "WRONG")
    console.print(table)
    for kind in args.large_kinds:
        peaks = [run.peak_rss_mib for run in runs if run.kind == kind]
        console.print(f"{kind}: largest - smallest peak = [bold]{max(peaks) - min(peaks):.0f} MiB[/bold]")
    return {"runs": [run.__dict__ for run in runs]}


def objects(args: argparse.Namespace, console: Console) -> dict[str, object]:
    directory = args.objects_dir or Path(tempfile.mkdtemp(prefix="segkit-objects-"))
    console.print(f"objects: segkit-train ({args.objects_seconds:.0f} s) + segkit-eval on the generated nuclei, "
                  f"against Otsu + a distance-transform watershed; work in {directory}")
    with console.status("objects: training"):
        result = measure_objects(directory, args.objects_seconds, args.override)
    table = Table(title="Object scores on the nuclei's validation split (matching at IoU > 0.5)")
    table.add_column("method")
    for score in SCORES:
        table.add_column(score, justify="right")
    table.add_row(f"segkit ({result.steps} steps)", *(f"{result.segkit[s]:.3f}" for s in SCORES))
    table.add_row("Otsu + watershed", *(f"{result.watershed[s]:.3f}" for s in SCORES))
    console.print(table)
    return result.__dict__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("large (peak memory of segkit-predict on tiled TIFF and OME-Zarr slides)")
    group.add_argument("--large-sizes", type=int, nargs="+", default=[4096, 16384], help="square slide sides")
    group.add_argument("--large-kinds", nargs="+", default=["tiff", "zarr"], choices=["tiff", "zarr"])
    group.add_argument("--large-dir", type=Path, help="where inputs and outputs go (default: a new temporary folder)")
    group = parser.add_argument_group("objects (nuclei counted: segkit against a classic watershed)")
    group.add_argument("--objects-seconds", type=float, default=240, help="segkit-train's time budget")
    group.add_argument("--objects-dir", type=Path, help="where data and runs go (default: a new temporary folder)")
