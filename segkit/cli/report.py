"""``segkit-report``: compare finished runs, or two evaluations image by image.

Examples::

    segkit-report logs/train/multiruns/2025-01-01_12-00-00        # a sweep's jobs
    segkit-report logs/train/runs/A logs/train/runs/B --out cmp/  # any run directories
    segkit-report --paired logs/eval/runs/A logs/eval/runs/B      # paired bootstrap, B vs A
    segkit-report SWEEP --columns provenance.git_commit provenance.versions.torch  # any record value

Writes ``report.csv``, ``report_by_config.csv``, ``report.md``, ``score_by_config.png`` and
``per_class_iou.png`` into the directory holding the first run found (a multirun directory
itself, or the first run directory's parent), or into ``--out``. A sweep directory holding an
Optuna study (``hparams_search=optuna``) adds ``study_trials.csv``, ``study_progress.png`` and a
study section to ``report.md`` (:mod:`segkit.report.study`). ``--paired`` writes
``paired.md`` and ``paired.json`` into the directory holding A's evaluation directory, or
``--out``. Each file is replaced atomically. Exit status: 0, or 2 for a usage error or when no
run was found (one line).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from segkit.atomic import atomic_path
from segkit.cli.flags import FlagParser
from segkit.errors import SegkitError, shown

if TYPE_CHECKING:
    from segkit.report.study import StudyInfo

PROGRAM = "segkit-report"
SCORE_FIGURE = "score_by_config.png"
CLASS_FIGURE = "per_class_iou.png"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options of ``segkit-report`` (see ``--help``).

    Example:
        >>> args = parse_args(["--paired", "a", "b", "--resamples", "500"])
        >>> args.paired, args.paths, args.resamples
        (True, [PosixPath('a'), PosixPath('b')], 500)
    """
    parser = FlagParser(
        prog=PROGRAM, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare finished segkit-train runs: one table row per run, seeds and folds aggregated per "
                    "configuration, figures. With --paired, compare two segkit-eval results of the same "
                    "images with a paired bootstrap.",
        epilog=f"examples:\n  {PROGRAM} logs/train/multiruns/<time>            # a sweep: its numbered job dirs\n"
               f"  {PROGRAM} logs/train/runs/<A> logs/train/runs/<B> --out comparison/\n"
               f"  {PROGRAM} --paired logs/eval/runs/<A> logs/eval/runs/<B>   # is B better than A?\n"
               f"  {PROGRAM} <sweep> --columns provenance.git_commit provenance.versions.torch val/IoU/disc\n\n"
               "PATH: a run directory (with metrics.json), or a directory of them (a multirun directory's\n"
               "numbered jobs, or logs/train/runs/); runs without metrics.json are listed as skipped.\n"
               "A sweep directory holding an Optuna study (hparams_search=optuna) adds study_trials.csv,\n"
               "study_progress.png and the study's section in report.md.\n"
               "--paired A B: segkit-eval output directories holding per_image_confusion.npz (or the\n"
               "file itself, or a run directory with exactly one eval*/ directory holding it).\n\n"
               "exit status: 0 ok, 2 usage error or no run found",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="runs, multirun directories, or A B with --paired")
    parser.add_argument("--out", type=Path, help="output directory (default: the directory holding the first run, e.g. the multirun directory)")
    parser.add_argument("--paired", action="store_true", help="paired bootstrap of mIoU(B) - mIoU(A) over the images of A and B")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default: 0)")
    parser.add_argument("--no-figures", action="store_true", help="tables only (no matplotlib)")
    parser.add_argument("--columns", nargs="+", action="extend", default=[], metavar="PATH",
                        help="more columns in report.csv and report.md's runs table: values of each run's "
                             "metrics.json by path, '.'- or '/'-separated (provenance.git_commit, "
                             "provenance.versions.torch, provenance.hostname, val/IoU/disc); put it after the runs")
    args = parser.parse_args(argv)
    if args.paired and len(args.paths) != 2:
        parser.error(f"--paired takes exactly two paths, A and B; got {len(args.paths)}")
    if args.paired and args.columns:
        parser.error("--columns adds columns to the runs tables; --paired writes none")
    if args.resamples < 1:
        parser.error(f"--resamples must be at least 1; got {args.resamples}")
    return args



def check_out(out: Path | None) -> None:
    """Refuse an ``--out`` that is a file or lies under one, before any run is read."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise SegkitError(f"--out {shown(out)} is a file, not a folder; pass a folder for the report (made if missing)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SegkitError(f"--out {shown(out)}: {shown(parent)} is a file, not a folder; choose another --out")
            return


def studies(paths: Sequence[Path]) -> list[tuple[Path, StudyInfo]]:
    """The Optuna study of each sweep directory among ``paths`` (read before anything is written),
    as ``(sweep dir, StudyInfo)``; a sweep whose study needs a missing optuna is listed as skipped."""
    from segkit.report.study import OptunaMissing, find_storage, read_study
    from segkit.training.run_dir import RunDirectory

    found = []
    for path in map(Path, paths):
        if not path.is_dir() or RunDirectory(path).is_run():
            continue
        try:
            url = find_storage(path)
        except OptunaMissing as missing:
            print(f"skipped the study of {path}: {missing}")
            continue
        if url is not None:
            found.append((path, read_study(path, url)))
    return found


def report(paths: Sequence[Path], out: Path | None = None, figures: bool = True,
           columns: Sequence[str] = ()) -> list[Path]:
    """Write the report of the runs under ``paths`` (and of a sweep's Optuna study), with the extra
    record ``columns`` in its runs tables; return the files written."""
    from segkit.report import tables
    from segkit.report.runs import find_runs, group_configs, swept_keys
    from segkit.report.study import summary, write_study

    runs, skipped = find_runs(paths)
    for item in skipped:
        print(f"skipped {item.path}: {item.reason}")
    swept_studies = studies(paths)
    if not runs and not swept_studies:
        raise SegkitError(f"no run with metrics.json found in {', '.join(map(str, paths))}")
    out_dir = Path(out) if out is not None else runs[0].path.parent if runs else swept_studies[0][0]
    out_dir.mkdir(parents=True, exist_ok=True)
    swept = swept_keys(runs)
    configs = group_configs(runs, swept)
    written = [
        tables.write_csv(out_dir / "report.csv", *tables.run_table(runs, swept, columns)),
        tables.write_csv(out_dir / "report_by_config.csv", *tables.config_table(configs, swept)),
    ]
    if figures and runs:
        from segkit.report import figures as draw

        written.append(draw.score_by_config(configs, tables.ranking_score(runs), out_dir / SCORE_FIGURE))
        heatmap = draw.per_class_iou([run for c in tables.rank_configs(configs, tables.ranking_score(runs))
                                      for run in c.runs], swept, out_dir / CLASS_FIGURE)
        written += [heatmap] if heatmap else []
    run_figures = [p.name for p in written if p.suffix == ".png"]
    sections = []
    for sweep_dir, study in swept_studies:  # files of a second study are named after its sweep
        files, section = write_study(study, out_dir, figures, "" if len(swept_studies) == 1 else f"_{sweep_dir.name}")
        written += files
        sections.append(section)
        print(summary(study))
    markdown = tables.report_markdown(configs, swept, out_dir, run_figures, skipped, sections, columns)
    written.append(tables.write_text(out_dir / "report.md", markdown))
    print(f"{len(runs)} runs, {len(configs)} configurations; swept: {', '.join(swept) or 'nothing'}")
    return written


def paired(a: Path, b: Path, out: Path | None = None, resamples: int = 10_000, seed: int = 0) -> list[Path]:
    """Paired bootstrap of B against A; print it and write ``paired.md`` and ``paired.json``."""
    from segkit.report.paired import check_paired, load_confusion, paired_bootstrap

    first, second = load_confusion(a), load_confusion(b)
    check_paired(first, second)
    result = paired_bootstrap(first.confusion, second.confusion, resamples=resamples, seed=seed)
    out_dir = Path(out) if out is not None else first.path.parent.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    names = str(first.path.parent.resolve()), str(second.path.parent.resolve())
    print(result.summary())
    written = []
    for name, text in (("paired.md", result.markdown(*names)),
                       ("paired.json", json.dumps(result.as_dict(*names), indent=2) + "\n")):
        with atomic_path(out_dir / name) as partial:
            partial.write_text(text)
        written.append(out_dir / name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``segkit-report``; returns the exit status.

    Example:
        >>> main(["/no/such/sweep"])
        skipped /no/such/sweep: does not exist
        2
    """
    try:
        args = parse_args(argv)
        check_out(args.out)
        if args.paired:
            written = paired(*args.paths, out=args.out, resamples=args.resamples, seed=args.seed)
        else:
            written = report(args.paths, out=args.out, figures=not args.no_figures, columns=args.columns)
    except SegkitError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
