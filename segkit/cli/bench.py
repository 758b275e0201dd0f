"""``segkit-bench``: measurements behind the README's performance tables.

Examples::

    segkit-bench                      # every benchmark with its defaults
    segkit-bench throughput --repeats 5 --json bench.json   # segkit-train vs a plain loop
    segkit-bench throughput --tiny    # a net of negligible compute: segkit's fixed cost per step
    segkit-bench throughput --tiny --against-itself   # the plain loop against itself: the noise
    segkit-bench throughput --tiny --repeats 0 --pool a.json b.json   # earlier runs, reported together
    segkit-bench throughput --against-overrides model.channels_last=false   # A/B of two segkit-train configs
    segkit-bench throughput --tiny --loops lightning segkit   # what segkit adds to a bare Lightning loop
    segkit-bench throughput --override callbacks.progress_bar=null ++trainer.enable_progress_bar=false
    segkit-bench fcn --fcn-size 500 --fcn-repeats 5   # needs: pip install --no-deps torchfcn
    segkit-bench dense --dense-size 512                # patch CNN: dense form vs naive scan
    segkit-bench memory --memory-sizes 2048 8192       # peak memory of predicting large images
    segkit-bench learning --learning-seconds 120       # defaults vs a hand-written loop, 4 data sets
    segkit-bench large --large-sizes 4096 16384        # segkit-predict on slides: peak memory, TIFF and OME-Zarr
    segkit-bench objects --objects-seconds 240         # nuclei counted: segkit vs Otsu + watershed
    segkit-bench sweep --sweep-parts schedules pruning killed   # Optuna workers: busy fraction, pruning
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from segkit.benchmarks.dense_patch import measure_dense_patch
from segkit.cli import bench_microscopy, bench_sweeps
from segkit.benchmarks.fcn_latency import bf16_support, measure_fcn_latency, summarise
from segkit.benchmarks.learning import SET_NAMES, measure_learning
from segkit.benchmarks.predict_memory import measure_predict_memory
from segkit.benchmarks.throughput import (LOG_EVERY, LOOPS, TINY_NET, ThroughputResult, load_result,
                                          measure_throughput, pool)
from segkit.errors import SegkitError


def _throughput_loops(args: argparse.Namespace) -> tuple[str, str]:
    """The two loops the throughput benchmark alternates (see ``--loops``)."""
    if args.against_itself:
        if args.loops or args.against_overrides is not None:
            raise SegkitError("--against-itself is --loops plain plain; give it alone, without --loops or "
                              "--against-overrides")
        return "plain", "plain"
    if args.loops:
        return args.loops[0], args.loops[1]
    return ("segkit", "segkit") if args.against_overrides is not None else ("plain", "segkit")


def _throughput_sides(args: argparse.Namespace, loops: tuple[str, str]) -> tuple[str, str, str]:
    """The names of the two sides the throughput benchmark alternates, and what it measures."""
    net = "tiny" if args.tiny else "default"
    first, second = LOOPS[loops[0]], LOOPS[loops[1]]
    if args.against_overrides is not None:
        second = f"{second} {' '.join(args.against_overrides)}"
    if first == second:
        return first, f"{second} again (A/A)", f"{net} net, {first} against itself: the machine's noise"
    if loops == ("plain", "segkit") and args.tiny:
        return first, second, "tiny net: segkit - plain = fixed cost per step"
    return first, second, f"{net} net, {second} against {first}"


def _print_throughput(result: ThroughputResult, first: str, second: str, overrides: list[str],
                      console: Console) -> dict[str, tuple[float, float]]:
    """Print the runs of both sides and the figures comparing them; return the figures' 95% intervals."""
    table = Table(title=f"Training step time, {' '.join(overrides)}, {torch.get_num_threads()} threads")
    table.add_column("loop")
    table.add_column("ms/step (best)", justify="right")
    table.add_column("median", justify="right")
    table.add_column("runs", justify="right")
    for name, runs in ((first, result.plain), (second, result.segkit)):
        table.add_row(name, f"{1e3 * min(runs):.2f}", f"{1e3 * statistics.median(runs):.2f}",
                      ", ".join(f"{1e3 * r:.2f}" for r in runs))
    console.print(table)
    console.print(f"{first} / {second} step time: [bold]{result.ratio:.3f}[/bold] (best runs), "
                  f"{result.median_ratio:.3f} (medians), {result.window_ratio:.3f} (each window's best run), "
                  f"{result.paired_ratio:.3f} (median pair); "
                  f"{second} - {first}: [bold]{1e3 * result.extra_s:.2f} ms[/bold] a step (best runs), "
                  f"{1e3 * result.median_extra_s:.2f} ms (medians), {1e3 * result.window_extra_s:.2f} ms "
                  f"(each window's best run), {1e3 * result.paired_extra_s:.2f} ms (median pair)")
    intervals = {name: result.interval(name) for name in ("window_extra_s", "paired_extra_s", "window_ratio",
                                                          "paired_ratio")}
    console.print("95% intervals (the alternations resampled): "
                  + ", ".join(f"{label} {1e3 * low:.2f} to {1e3 * high:.2f} ms, ratio {ratio[0]:.3f} to {ratio[1]:.3f}"
                              for label, (low, high), ratio in
                              (("each window's best run", intervals["window_extra_s"], intervals["window_ratio"]),
                               ("median pair", intervals["paired_extra_s"], intervals["paired_ratio"]))))
    return intervals


def _throughput(args: argparse.Namespace, console: Console) -> dict[str, object]:
    size = ["data.image_size=32"] if args.tiny else [f"data.image_size={args.image_size}"]
    overrides = [f"data.batch_size={args.batch_size}", *size, *(TINY_NET[:2] if args.tiny else ()), *args.override]
    loops = _throughput_loops(args)
    first, second, what = _throughput_sides(args, loops)
    ab = args.against_overrides
    earlier = [load_result(path) for path in args.pool]
    # No runs yet, but this benchmark's settings: each pooled file is checked against them.
    runs = [ThroughputResult([], [], overrides, args.steps, args.warmup, loops, ab)]
    if args.repeats:
        console.print(f"throughput ({what}): {args.repeats} x ({first}, {second}), each a subprocess with its "
                      f"output to a file; steps {args.warmup + 1}-{args.warmup + args.steps}; "
                      f"overrides: {' '.join(overrides)}")
        with console.status("throughput: training"):
            runs = [measure_throughput(overrides, args.steps, args.warmup, args.repeats, loops, ab)]
    elif not earlier:
        raise SegkitError("--repeats 0 runs nothing: give --pool FILE... to report earlier runs")
    result = pool([*runs, *earlier], ["this benchmark's settings", *map(str, args.pool)])
    if earlier:
        console.print(f"throughput ({what}): {len(result.plain)} alternations pooled from "
                      f"{', '.join(map(str, args.pool))}{' and this run' if args.repeats else ''}")
    intervals = _print_throughput(result, first, second, overrides, console)
    return {"plain_s_per_step": result.plain, "segkit_s_per_step": result.segkit, "ratio": result.ratio,
            "median_ratio": result.median_ratio, "window_ratio": result.window_ratio,
            "extra_s_per_step": result.extra_s, "median_extra_s_per_step": result.median_extra_s,
            "window_extra_s_per_step": result.window_extra_s,
            "paired_ratio": result.paired_ratio, "paired_extra_s_per_step": result.paired_extra_s,
            "plain_windows_s_per_step": result.plain_windows, "segkit_windows_s_per_step": result.segkit_windows,
            "intervals_95": {name: list(bounds) for name, bounds in intervals.items()},
            "pooled_from": [str(path) for path in args.pool],
            "tiny": args.tiny, "loops": list(loops), "against_itself": result.against_itself, "against_overrides": ab,
            "overrides": overrides,
            "steps": result.steps, "warmup": args.warmup, "threads": torch.get_num_threads()}


def _fcn(args: argparse.Namespace, console: Console) -> dict[str, object]:
    device = torch.device(args.device)
    with console.status("fcn") as status:
        variants = measure_fcn_latency(args.fcn_size, args.fcn_repeats, args.fcn_warmup, args.device,
                                       progress=lambda text: status.update(f"fcn latency, {text}"))
    summary = summarise(variants)
    where = f"{torch.get_num_threads()} CPU threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    table = Table(title=f"FCN-8s latency, {args.fcn_size}x{args.fcn_size}, batch 1, {where} (seconds)")
    for column in ("net", "forward best", "median", "train step best", "median"):
        table.add_column(column, justify="left" if column == "net" else "right")
    for name, times in summary.items():
        if name != "segkit_over_torchfcn":
            table.add_row(name, *(f"{times[k]:.3f}" for k in ("forward_best_s", "forward_median_s", "train_step_best_s", "train_step_median_s")))
    console.print(table)
    ratio = summary["segkit_over_torchfcn"]
    console.print(f"segkit / torchfcn time, fp32: forward [bold]{ratio['forward_best_s']:.3f}[/bold] (best), "
                  f"{ratio['forward_median_s']:.3f} (median); train step [bold]{ratio['train_step_best_s']:.3f}[/bold] "
                  f"(best), {ratio['train_step_median_s']:.3f} (median); below 1 = segkit faster")
    skipped = bf16_support(device)
    if skipped:
        console.print(f"bf16 autocast: {skipped}")
    return {"size": args.fcn_size, "device": args.device, "threads": torch.get_num_threads(),
            "bf16_skipped": skipped, "seconds": {k: v for k, v in summary.items() if k != "segkit_over_torchfcn"},
            "runs": {name: {"forward_s": v.forward_s, "train_step_s": v.train_step_s} for name, v in variants.items()},
            "segkit_over_torchfcn": ratio}


def _dense(args: argparse.Namespace, console: Console) -> dict[str, object]:
    with console.status("dense") as status:
        r = measure_dense_patch(args.dense_size, args.dense_pixels, args.dense_repeats,
                                progress=lambda text: status.update(f"dense vs naive, {text}"))
    table = Table(title=f"Patch CNN N4 on one {r.size}x{r.size} image, {torch.get_num_threads()} CPU threads")
    table.add_column("pass")
    table.add_column("seconds", justify="right")
    table.add_column("GMAC/s", justify="right")
    table.add_column("of matmul", justify="right")
    naive_rate = r.naive_macs_per_pixel * r.sampled_pixels / r.naive_sample_s
    table.add_row(f"naive, batched windows ({r.sampled_pixels} px timed, extrapolated)", f"{r.naive_s:.1f}",
                  f"{naive_rate / 1e9:.1f}", f"{r.naive_efficiency:.1%}")
    table.add_row("dense, dilated kernels", f"{r.dilated_s:.3f}", f"{r.dense_macs / r.dilated_s / 1e9:.1f}",
                  f"{r.dense_macs / r.dilated_s / r.matmul_macs_per_s:.1%}")
    table.add_row("dense, fragments (default)", f"{min(r.dense_s):.3f}", f"{r.dense_macs_per_s / 1e9:.1f}", f"{r.efficiency:.1%}")
    table.add_row("2048x2048 fp32 matmul", "", f"{r.matmul_macs_per_s / 1e9:.1f}", "100%")
    console.print(table)
    console.print(f"dense / naive speed-up: [bold]{r.speedup:.0f}x[/bold]; dense efficiency [bold]{r.efficiency:.1%}[/bold] "
                  f"of matmul; MACs per pixel naive {r.naive_macs_per_pixel:.3g}, dense {r.dense_macs / r.size ** 2:.3g} "
                  f"(ratio {r.naive_macs_per_pixel * r.size ** 2 / r.dense_macs:.0f}x); max |dense - naive| {r.max_abs_difference:.1e}")
    return {"size": r.size, "dense_s": r.dense_s, "dilated_s": r.dilated_s, "naive_sample_s": r.naive_sample_s,
            "sampled_pixels": r.sampled_pixels, "naive_extrapolated_s": r.naive_s, "speedup": r.speedup,
            "dense_macs": r.dense_macs, "naive_macs_per_pixel": r.naive_macs_per_pixel,
            "matmul_macs_per_s": r.matmul_macs_per_s, "efficiency": r.efficiency,
            "naive_efficiency": r.naive_efficiency, "max_abs_difference": r.max_abs_difference}


def _memory(args: argparse.Namespace, console: Console) -> dict[str, object]:
    with console.status(f"memory: predicting {', '.join(f'{s}x{s}' for s in args.memory_sizes)}, one process each"):
        runs = measure_predict_memory(args.memory_sizes, args.memory_mode, args.memory_window)
    table = Table(title=f"Peak memory of segkit-predict ({args.memory_mode}, {args.memory_window}-px windows, "
                        f"default U-Net, RGB PNG in, mask PNG out, {torch.get_num_threads()} CPU threads)")
    for column in ("image", "windows", "seconds", "before the image (MiB)", "peak (MiB)", "peak / smallest"):
        table.add_column(column, justify="right")
    for run in runs:
        table.add_row(f"{run.size}x{run.size}", str(run.windows), f"{run.seconds:.1f}", f"{run.before_image_mib:.0f}",
                      f"{run.peak_mib:.0f}", f"{run.peak_mib / runs[0].peak_mib:.2f}")
    console.print(table)
    largest = runs[-1]
    logits_mib = 6 * largest.size**2 * 4 / 2**20
    console.print(f"{largest.size}x{largest.size}: peak [bold]{largest.peak_mib:.0f} MiB[/bold]; its float32 logits "
                  f"alone would take {logits_mib:.0f} MiB")
    return {"runs": [run.__dict__ for run in runs], "mode": args.memory_mode, "window": args.memory_window}


def _learning(args: argparse.Namespace, console: Console) -> dict[str, object]:
    directory = args.learning_dir or Path(tempfile.mkdtemp(prefix="segkit-learning-"))
    console.print(f"learning: {', '.join(args.learning_sets)}, {args.learning_seconds:.0f} s of training each for "
                  f"segkit-train (defaults) and the hand-written loop, one after the other; data and runs in {directory}")
    with console.status("learning: training"):
        results = measure_learning(directory, args.learning_seconds, args.learning_sets, args.override)
    table = Table(title=f"Final val mIoU after {args.learning_seconds:.0f} s of training, {torch.get_num_threads()} CPU threads")
    for column in ("set", "segkit defaults", "hand-written loop", "segkit - loop", "steps (segkit / loop)"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.set_name, f"{r.segkit_miou:.3f}", f"{r.hand_miou:.3f}", f"{r.margin:+.3f}",
                      f"{r.segkit_steps} of {r.segkit_batch} / {r.hand_steps} of {r.hand_batch}")
    console.print(table)
    return {"directory": str(directory), "results": [r.__dict__ for r in results]}


BENCHMARKS = {"throughput": _throughput, "fcn": _fcn, "dense": _dense, "memory": _memory, "learning": _learning,
              "large": bench_microscopy.large, "objects": bench_microscopy.objects, "sweep": bench_sweeps.sweep}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segkit-bench", description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                        help=f"which to run, of: {', '.join(BENCHMARKS)} (default: all)")
    throughput = parser.add_argument_group("throughput (segkit-train against a plain PyTorch loop)")
    throughput.add_argument("--steps", type=int, default=180, help=f"timed training steps per run (a multiple of {LOG_EVERY})")
    throughput.add_argument("--warmup", type=int, default=19,
                            help=f"untimed steps before timing (+1 a multiple of {LOG_EVERY}: the logged steps)")
    throughput.add_argument("--tiny", action="store_true",
                            help=f"a net of negligible compute ({' '.join(TINY_NET)}): segkit - plain is the fixed cost per step")
    throughput.add_argument("--batch-size", type=int, default=8, help="data.batch_size")
    throughput.add_argument("--image-size", type=int, default=64, help="data.image_size")
    throughput.add_argument("--repeats", type=int, default=3,
                            help="alternating runs of each loop (0 with --pool: report the pooled files alone)")
    throughput.add_argument("--loops", nargs=2, choices=list(LOOPS), metavar=("FIRST", "SECOND"),
                            help=f"the two loops alternated, of {', '.join(LOOPS)} (default: plain segkit); "
                                 "lightning is the plain loop in a bare Lightning Trainer, so lightning segkit "
                                 "is what segkit adds to Lightning")
    throughput.add_argument("--against-itself", action="store_true",
                            help="--loops plain plain (A/A): how far noise moves the figures")
    throughput.add_argument("--against-overrides", nargs="+", metavar="KEY=VALUE",
                            help="these overrides added on the second side; without --loops, segkit-train on both "
                                 "sides (an A/B of two configs under the same load)")
    throughput.add_argument("--pool", nargs="+", type=Path, default=[], metavar="JSON",
                            help="earlier --json files of this benchmark with the same settings: "
                                 "their runs are reported together with this run's")
    throughput.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                            help="more segkit-train overrides, e.g. ++trainer.enable_progress_bar=false")
    fcn = parser.add_argument_group("fcn (FCN-8s latency against torchfcn)")
    fcn.add_argument("--fcn-size", type=int, default=500, help="square input side (the paper's 500)")
    fcn.add_argument("--fcn-repeats", type=int, default=5, help="alternating timed runs of each variant")
    fcn.add_argument("--fcn-warmup", type=int, default=1, help="untimed runs first")
    dense = parser.add_argument_group("dense (patch CNN N4: dense form against naive window scanning)")
    dense.add_argument("--dense-size", type=int, default=512, help="square image side")
    dense.add_argument("--dense-pixels", type=int, default=1024, help="pixels timed naively (then extrapolated)")
    dense.add_argument("--dense-repeats", type=int, default=5, help="timed dense passes (best counts)")
    memory = parser.add_argument_group("memory (peak memory of predicting one large image)")
    memory.add_argument("--memory-sizes", type=int, nargs="+", default=[2048, 8192], help="square image sides")
    memory.add_argument("--memory-mode", default="slide", choices=["slide", "tile", "whole"])
    memory.add_argument("--memory-window", type=int, default=512)
    learning = parser.add_argument_group("learning (segkit's defaults against a hand-written loop, same seconds)")
    learning.add_argument("--learning-seconds", type=float, default=120, help="training seconds of each run")
    learning.add_argument("--learning-sets", nargs="+", default=list(SET_NAMES), choices=SET_NAMES, metavar="SET",
                          help=f"of: {', '.join(SET_NAMES)}")
    learning.add_argument("--learning-dir", type=Path, help="where data and runs go (default: a new temporary folder)")
    bench_microscopy.add_arguments(parser)
    bench_sweeps.add_arguments(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda (fcn)")
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
    try:
        results = {name: BENCHMARKS[name](args, console) for name in (args.benchmarks or BENCHMARKS)}
    except SegkitError as error:
        print(f"segkit-bench: error: {error}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
