"""Training throughput: the ``segkit-train`` command as a user launches it, against a plain loop.

The segkit side is the ``segkit-train`` console command run as a subprocess, its output going
to a file, on the default config (callbacks, TensorBoard logger, scheduler, train metrics,
resumable loader) plus the given overrides. Only validation and the final test are off, since
the plain loop has neither. Its step times come from its own TensorBoard ``train/loss`` events
(written at the end of every ``trainer.log_every_n_steps``-th step, with their wall time): no
timing code is added to what runs.

The plain side, :mod:`segkit.benchmarks.plain_loop`, is a subprocess too: the same composed
config, data module, seed and net, and the textbook loop over the same training loader (the
same batches at every step). A third loop, :mod:`segkit.benchmarks.lightning_loop`, runs that
same step in a bare Lightning ``Trainer``: against it, segkit-train shows what segkit adds to
Lightning, and against the plain loop it shows what Lightning itself costs (``loops``). The two
loops compared are timed from the end of step ``warmup`` to the end of step ``warmup + steps``
in 10-step windows; runs alternate (plain, segkit, plain, ...) so that drift in the machine's
load hits both alike. :class:`ThroughputResult` gives the best and the median
runs, each run at the median of its windows, each window at its fastest run, and the median
over the alternated pairs of runs, each with a bootstrap interval; :func:`pool` joins the runs of
several benchmarks of the same settings (``--json`` files, :func:`load_result`).

With :data:`TINY_NET` the net's own work is negligible: segkit's step time minus the plain
loop's is then segkit's fixed cost per step.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from segkit.errors import SegkitError

# A net whose compute is negligible beside a step's fixed costs (one level, width 4, 32 px).
TINY_NET = ("model.depth=1", "model.base_width=4", "data.image_size=32")
# The loops a benchmark can alternate, by name: the textbook loop, the same in a bare Lightning
# Trainer, and the segkit-train command.
LOOPS = {"plain": "plain PyTorch", "lightning": "bare Lightning", "segkit": "segkit-train"}
# TensorBoard writes train/loss every trainer.log_every_n_steps (the default config's 10).
LOG_EVERY = 10


@dataclass
class ThroughputResult:
    """Seconds per step of each loop in every ``LOG_EVERY``-step window of the timed steps, one
    list per run: ``plain_windows[run][window]``."""

    plain_windows: list[list[float]]
    segkit_windows: list[list[float]]
    overrides: list[str]
    steps: int
    warmup: int = 19
    # The two loops alternated, of LOOPS: the first side's runs are in the "plain" lists, the
    # second's in the "segkit" lists.
    loops: tuple[str, str] = ("plain", "segkit")
    # The second side's extra overrides, for an A/B of two configs.
    against_overrides: list[str] | None = None

    @property
    def against_itself(self) -> bool:
        """The plain loop on both sides with the same config (A/A): its figures are the noise."""
        return self.loops == ("plain", "plain") and self.against_overrides is None

    @property
    def plain(self) -> list[float]:
        """Each plain run's figure: the median of its windows, so that a burst of load elsewhere
        on a shared machine spoils one window rather than the run."""
        return [statistics.median(run) for run in self.plain_windows]

    @property
    def segkit(self) -> list[float]:
        return [statistics.median(run) for run in self.segkit_windows]

    @property
    def ratio(self) -> float:
        """Plain / segkit step time, best runs: on a shared machine, load only ever slows a run
        down, so each loop's fastest run is the closest to its undisturbed speed (``timeit``)."""
        return min(self.plain) / min(self.segkit)

    @property
    def extra_s(self) -> float:
        """segkit minus plain seconds per step, best runs: with :data:`TINY_NET`, the fixed cost."""
        return min(self.segkit) - min(self.plain)

    @property
    def median_extra_s(self) -> float:
        return statistics.median(self.segkit) - statistics.median(self.plain)

    @property
    def median_ratio(self) -> float:
        """Median over median, for comparison: noisier where load comes and goes."""
        return statistics.median(self.plain) / statistics.median(self.segkit)

    @property
    def paired_extra_s(self) -> float:
        """segkit minus plain seconds per step, the median over the alternations of each segkit
        run minus the plain run just before it. The two runs of a pair share the machine's state
        of those minutes, so load that drifts over the whole benchmark cancels within each pair,
        and a burst that spoils one run spoils one pair, which the median leaves out."""
        return statistics.median(s - p for p, s in zip(self.plain, self.segkit))

    @property
    def paired_ratio(self) -> float:
        """Plain / segkit step time, the median over the alternations (:attr:`paired_extra_s`)."""
        return statistics.median(p / s for p, s in zip(self.plain, self.segkit))

    def _window_bests(self) -> tuple[float, float]:
        """Each loop's mean over windows of the window's fastest run."""
        def mean_best(runs: list[list[float]]) -> float:
            return statistics.fmean(min(window) for window in zip(*runs))
        return mean_best(self.plain_windows), mean_best(self.segkit_windows)

    @property
    def window_extra_s(self) -> float:
        """segkit minus plain seconds per step, each window at its fastest run. Both loops load
        the same batches in the same window of every run, so load elsewhere, which only ever slows
        a window, is what differs between runs; the best of many runs of each window (``timeit``'s
        rule, applied window by window) leaves a burst in one run out of the figure, where a
        run's median still carries a load that lasted much of that run."""
        plain, segkit = self._window_bests()
        return segkit - plain

    @property
    def window_ratio(self) -> float:
        """Plain / segkit step time, each window at its fastest run (:attr:`window_extra_s`)."""
        plain, segkit = self._window_bests()
        return plain / segkit

    def interval(self, figure: str, level: float = 0.95, draws: int = 1000, seed: int = 0) -> tuple[float, float]:
        """A bootstrap interval of ``figure`` (a property, e.g. ``"window_extra_s"``): the
        alternations drawn with replacement, each pair of runs kept together, ``draws`` times.
        It shows how far another benchmark of as many runs on the same machine could move the
        figure; the fastest-run figures, minima, have rough intervals."""
        rng, count = random.Random(seed), len(self.plain_windows)
        values = []
        for _ in range(draws):
            picks = [rng.randrange(count) for _ in range(count)]
            sample = replace(self, plain_windows=[self.plain_windows[i] for i in picks],
                             segkit_windows=[self.segkit_windows[i] for i in picks])
            values.append(getattr(sample, figure))
        values.sort()
        tail = round((1 - level) / 2 * draws)
        return values[tail], values[draws - 1 - tail]


def load_result(path: Path) -> ThroughputResult:
    """The runs of an earlier ``segkit-bench throughput --json PATH``."""
    try:
        record = json.loads(path.read_text())["throughput"]
        against_overrides = record.get("against_overrides")
        # Files written before --loops name their loops by the comparison they made.
        loops = record.get("loops") or (["plain", "plain"] if record["against_itself"] else
                                        ["segkit", "segkit"] if against_overrides is not None else ["plain", "segkit"])
        return ThroughputResult(record["plain_windows_s_per_step"], record["segkit_windows_s_per_step"],
                                list(record["overrides"]), int(record["steps"]), int(record["warmup"]),
                                (loops[0], loops[1]), against_overrides)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SegkitError(f"{path}: not the --json file of a segkit-bench throughput run ({error!r}); "
                          "pass files that `segkit-bench throughput --json FILE` wrote") from error


def pool(results: Sequence[ThroughputResult], sources: Sequence[str]) -> ThroughputResult:
    """One result holding the runs of ``results``, which must share their settings; ``sources``
    names each in the error."""
    first = results[0]
    settings = ("overrides", "steps", "warmup", "loops", "against_overrides")
    for result, source in zip(results[1:], sources[1:]):
        for name in settings:
            if getattr(result, name) != getattr(first, name):
                raise SegkitError(f"{source}: {name} {getattr(result, name)!r}, not {getattr(first, name)!r} as in "
                                  f"{sources[0]}; pool only runs of the same settings "
                                  "(--tiny, --steps, --warmup, --override, --loops, --against-itself, --against-overrides)")
    return replace(first, plain_windows=[run for result in results for run in result.plain_windows],
                   segkit_windows=[run for result in results for run in result.segkit_windows])


def _windows(ends: dict[int, float], warmup: int, steps: int, every: int = LOG_EVERY) -> list[float]:
    """Seconds per step in each ``every``-step window from the end of step ``warmup`` to the end
    of step ``warmup + steps`` (0-based)."""
    marks = list(range(warmup, warmup + steps + 1, every))
    missing = [step for step in (*marks, warmup + steps) if step not in ends]
    if missing or steps % every:
        raise SegkitError(f"no step time recorded for step {missing[0] if missing else warmup + steps}; "
                          f"the run stopped early (see its log), or --steps is not a multiple of {every}")
    return [(ends[b] - ends[a]) / every for a, b in zip(marks, marks[1:])]


def _segkit_train() -> list[str]:
    """The ``segkit-train`` console script beside this interpreter (else ``python -m``)."""
    script = Path(sys.executable).parent / "segkit-train"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("segkit-train")
    return [found] if found else [sys.executable, "-m", "segkit.cli.train"]


def _run(command: list[str], log: Path) -> None:
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        raise SegkitError(f"{' '.join(command[:3])} ... failed with exit code {done.returncode}: {tail[0]}")


def segkit_step_ends(run_dir: Path) -> dict[int, float]:
    """Wall time at the end of each logged step of a run, from its TensorBoard ``train/loss``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {event.step: event.wall_time for event in events.Scalars("train/loss")}


def time_segkit(overrides: Sequence[str], warmup: int, steps: int) -> list[float]:
    """Seconds per step of the ``segkit-train`` command in each window (see the module doc)."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        _run([*_segkit_train(), *overrides, f"trainer.max_steps={warmup + steps + 1}",
              "++trainer.limit_val_batches=0", "test=false", f"hydra.run.dir={run_dir}"], Path(tmp) / "segkit.log")
        return _windows(segkit_step_ends(run_dir), warmup, steps)


def _time_loop_module(module: str, overrides: Sequence[str], warmup: int, steps: int) -> list[float]:
    """Seconds per step, in each window, of ``python -m MODULE OUT.json STEPS OVERRIDES...``, a
    loop that writes the end time of every step to OUT.json."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "steps.json"
        _run([sys.executable, "-m", module, str(out), str(warmup + steps + 1), *overrides], Path(tmp) / "loop.log")
        ends = json.loads(out.read_text())["step_ends"]
        return _windows(dict(enumerate(ends)), warmup, steps)


def time_plain(overrides: Sequence[str], warmup: int, steps: int) -> list[float]:
    """Seconds per step of the textbook loop (:mod:`segkit.benchmarks.plain_loop`), as a
    subprocess, in each window."""
    return _time_loop_module("segkit.benchmarks.plain_loop", overrides, warmup, steps)


def time_lightning(overrides: Sequence[str], warmup: int, steps: int) -> list[float]:
    """Seconds per step of the same loop in a bare Lightning ``Trainer``
    (:mod:`segkit.benchmarks.lightning_loop`), as a subprocess, in each window."""
    return _time_loop_module("segkit.benchmarks.lightning_loop", overrides, warmup, steps)


def measure_throughput(overrides: Sequence[str] = (), steps: int = 180, warmup: int = 19, repeats: int = 3,
                       loops: tuple[str, str] = ("plain", "segkit"), against_overrides: Sequence[str] | None = None,
                       ) -> ThroughputResult:
    """Alternate runs of the two ``loops`` (of :data:`LOOPS`) ``repeats`` times, each timing
    ``steps`` steps after ``warmup``.

    The same loop on both sides (``("plain", "plain")``, an A/A comparison) gives figures that are
    zero but for the machine's noise, and so shows how far that noise moves them.
    ``("lightning", "segkit")`` separates what segkit adds from what Lightning costs.
    ``against_overrides`` are added to the second side's config: with ``("segkit", "segkit")``, an
    A/B of two configs under the same load.

    ``warmup`` and ``warmup + steps`` must be steps whose loss TensorBoard receives (``step + 1``
    a multiple of :data:`LOG_EVERY`, unless the overrides log every step).

    Example:
        >>> r = measure_throughput([*TINY_NET, "data.train_size=16", "data.batch_size=2"], steps=10, warmup=9, repeats=1)
        >>> r.ratio > 0 and len(r.plain) == len(r.segkit) == 1 and len(r.plain_windows[0]) == 1
        True
    """
    # Looked up when called, so that each loop's timer is the module's current one.
    timers = {"plain": time_plain, "lightning": time_lightning, "segkit": time_segkit}
    unknown = [loop for loop in loops if loop not in LOOPS]
    if unknown or len(loops) != 2:
        raise SegkitError(f"loops {list(loops)}: give two of {', '.join(LOOPS)}")
    first, second = timers[loops[0]], timers[loops[1]]
    firsts, seconds = [], []
    for _ in range(repeats):
        firsts.append(first(overrides, warmup, steps))
        seconds.append(second([*overrides, *(against_overrides or ())], warmup, steps))
    return ThroughputResult(firsts, seconds, list(overrides), steps, warmup, (loops[0], loops[1]),
                            None if against_overrides is None else list(against_overrides))
