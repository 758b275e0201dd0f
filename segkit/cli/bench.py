"""``segkit-bench``: measurements behind the README's performance tables.

Examples::

    segkit-bench                      # every benchmark with its defaults
    segkit-bench throughput --steps 100 --repeats 5 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from segkit.benchmarks.throughput import measure_throughput


def _throughput(args: argparse.Namespace, console: Console) -> dict[str, object]:
    with console.status(f"throughput: {args.repeats} x (plain loop, fit loop), {args.steps} steps each"):
        result = measure_throughput(args.steps, args.warmup, args.batch_size, args.image_size, args.repeats)
    table = Table(title=f"Training throughput, U-Net on shapes {args.image_size}px, batch {args.batch_size}, {torch.get_num_threads()} threads")
    table.add_column("loop")
    table.add_column("images/s (best)", justify="right")
    table.add_column("median", justify="right")
    table.add_column("runs", justify="right")
    for name, runs in (("plain PyTorch", result.plain), ("segkit fit (Lightning)", result.fit)):
        table.add_row(name, f"{max(runs):.1f}", f"{statistics.median(runs):.1f}", ", ".join(f"{r:.1f}" for r in runs))
    console.print(table)
    console.print(f"fit / plain throughput ratio: [bold]{result.ratio:.3f}[/bold] (best runs), {result.median_ratio:.3f} (medians)")
    return {"plain_images_per_s": result.plain, "fit_images_per_s": result.fit, "ratio": result.ratio, "median_ratio": result.median_ratio,
            "batch_size": result.batch_size, "image_size": result.image_size, "steps": result.steps}


BENCHMARKS = {"throughput": _throughput}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segkit-bench", description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                        help=f"which to run, of: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs of each loop")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.benchmarks if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    if args.json is not None and args.json.exists():
        print(f"segkit-bench: error: --json {args.json} exists; choose a new file name", file=sys.stderr)
        return 2
    # Lightning's per-run info lines would interleave with the tables.
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    console = Console()
    results = {name: BENCHMARKS[name](args, console) for name in (args.benchmarks or BENCHMARKS)}
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
