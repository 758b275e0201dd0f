"""segkit-bench: each benchmark runs at a tiny size and reports real, consistent timings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import needs

from segkit.benchmarks import fcn_latency, lightning_loop, plain_loop, throughput
from segkit.cli.bench import main
from segkit.errors import SegkitError


@needs("torchfcn", "pip install --no-deps torchfcn")  # the reference peer
def test_fcn_benchmark_reports_both_nets_and_their_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fcn.json"
    assert main(["fcn", "--fcn-size", "32", "--fcn-repeats", "1", "--fcn-warmup", "0", "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["fcn"]
    runs = result["runs"]
    assert {"torchfcn FCN8s, fp32", "segkit FCN8s, fp32", "segkit FCN8s, fp32 channels_last"} <= set(runs)
    assert all(len(r["forward_s"]) == 1 and min(r["train_step_s"]) > 0 for r in runs.values())
    ours, ref = result["seconds"]["segkit FCN8s, fp32"], result["seconds"]["torchfcn FCN8s, fp32"]
    assert result["segkit_over_torchfcn"]["forward_best_s"] == pytest.approx(ours["forward_best_s"] / ref["forward_best_s"])
    assert "segkit / torchfcn time" in capsys.readouterr().out


@needs("torchfcn", "pip install --no-deps torchfcn")
def test_the_compared_nets_compute_the_same_function() -> None:
    ours, reference = fcn_latency.matched_pair(num_classes=5)
    x = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        expected = ours.eval()(x)
        assert expected.abs().max() > 0
        assert torch.allclose(reference.eval()(x), expected, atol=1e-5 * expected.abs().max().item())
    # Both train the same parameters (upsamplings frozen).
    trainable = lambda net: sum(p.numel() for p in net.parameters() if p.requires_grad)  # noqa: E731
    assert trainable(ours) == trainable(reference)


def test_missing_torchfcn_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("torchfcn", "torchfcn.models", "torchfcn.models.fcn8s"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, even after an earlier test
    monkeypatch.setattr(fcn_latency.importlib.util, "find_spec", lambda name: None)
    assert main(["fcn", "--fcn-size", "32", "--device", "cpu"]) == 2
    assert "pip install --no-deps torchfcn" in capsys.readouterr().err


def test_dense_benchmark_times_both_passes_and_checks_they_agree(tmp_path: Path) -> None:
    out = tmp_path / "dense.json"
    assert main(["dense", "--dense-size", "64", "--dense-pixels", "16", "--dense-repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["dense"]
    assert result["max_abs_difference"] < 1e-5
    assert result["naive_extrapolated_s"] == pytest.approx(result["naive_sample_s"] * 64 * 64 / 16)
    assert result["speedup"] == pytest.approx(result["naive_extrapolated_s"] / min(result["dense_s"]))
    # N4: ~1.2e8 MACs per window; the dense pass over 64 x 64 (+94 px of context) far fewer.
    assert result["naive_macs_per_pixel"] == 121_464_592  # N4's per-window count (test_patch_cnn)
    assert result["dense_macs"] < result["naive_macs_per_pixel"] * 64 * 64 / 20
    assert 0 < result["efficiency"] == pytest.approx(result["dense_macs"] / min(result["dense_s"]) / result["matmul_macs_per_s"])


def test_throughput_benchmark_times_segkit_train_and_a_plain_loop(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    args = ["throughput", "--tiny", "--steps", "10", "--warmup", "9", "--repeats", "1", "--batch-size", "2",
            "--override", "data.train_size=8"]
    assert main([*args, "--json", str(out)]) == 0
    result = json.loads(out.read_text())["throughput"]
    assert len(result["plain_s_per_step"]) == len(result["segkit_s_per_step"]) == 1
    plain, segkit = result["plain_s_per_step"][0], result["segkit_s_per_step"][0]
    assert result["ratio"] == pytest.approx(plain / segkit)
    assert result["extra_s_per_step"] == pytest.approx(segkit - plain)  # the fixed cost, with the tiny net
    assert result["overrides"] == ["data.batch_size=2", "data.image_size=32", "model.depth=1", "model.base_width=4",
                                   "data.train_size=8"]


def test_against_itself_times_the_plain_loop_on_both_sides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timed: list[list[str]] = []

    def plain(overrides: list[str], warmup: int, steps: int) -> list[float]:
        timed.append(list(overrides))  # the same loop each time; a burst of load in the second run
        return [0.010, 0.020] if len(timed) == 2 else [0.010, 0.012]

    def segkit(*args: object) -> list[float]:
        raise AssertionError("segkit-train ran in an A/A comparison")

    monkeypatch.setattr(throughput, "time_plain", plain)
    monkeypatch.setattr(throughput, "time_segkit", segkit)
    out = tmp_path / "aa.json"
    assert main(["throughput", "--tiny", "--against-itself", "--repeats", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["throughput"]
    assert len(timed) == 4 and result["against_itself"]
    assert result["window_extra_s_per_step"] == pytest.approx(0.0) == result["extra_s_per_step"]
    assert result["median_extra_s_per_step"] == pytest.approx(0.002)  # run medians 0.011, 0.011 against 0.015, 0.011
    assert result["paired_extra_s_per_step"] == pytest.approx(0.002)  # pairs 0.015 - 0.011, 0.011 - 0.011


def _fake_loops(monkeypatch: pytest.MonkeyPatch, plain_s: float, segkit_s: float) -> None:
    monkeypatch.setattr(throughput, "time_plain", lambda overrides, warmup, steps: [plain_s])
    monkeypatch.setattr(throughput, "time_segkit", lambda overrides, warmup, steps: [segkit_s])


def test_earlier_benchmarks_of_the_same_settings_are_reported_together(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["throughput", "--tiny", "--steps", "10", "--warmup", "9", "--repeats", "2"]
    quiet, loaded, both = tmp_path / "quiet.json", tmp_path / "loaded.json", tmp_path / "both.json"
    _fake_loops(monkeypatch, 0.010, 0.012)  # a quiet machine: 2 ms apart
    assert main([*args, "--json", str(quiet)]) == 0
    _fake_loops(monkeypatch, 0.020, 0.021)  # a loaded one, where this loop fared better: 1 ms apart
    assert main([*args, "--json", str(loaded)]) == 0
    monkeypatch.setattr(throughput, "time_plain", lambda *a: pytest.fail("--repeats 0 ran a loop"))
    assert main([*args[:-1], "0", "--pool", str(quiet), str(loaded), "--json", str(both)]) == 0
    result = json.loads(both.read_text())["throughput"]
    assert result["plain_s_per_step"] == pytest.approx([0.010, 0.010, 0.020, 0.020])
    assert result["paired_extra_s_per_step"] == pytest.approx(0.0015)  # pairs 2, 2, 1, 1 ms
    assert result["window_extra_s_per_step"] == pytest.approx(0.002)  # each loop's quiet runs: 12 - 10 ms
    assert result["pooled_from"] == [str(quiet), str(loaded)]
    # With a new run too: its two pairs join the four.
    _fake_loops(monkeypatch, 0.010, 0.015)
    assert main([*args, "--pool", str(quiet), str(loaded), "--json", str(tmp_path / "three.json")]) == 0
    assert json.loads((tmp_path / "three.json").read_text())["throughput"]["paired_extra_s_per_step"] == pytest.approx(0.002)


def test_pooling_refuses_runs_of_other_settings_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    _fake_loops(monkeypatch, 0.010, 0.012)
    tiny = tmp_path / "tiny.json"
    assert main(["throughput", "--tiny", "--steps", "10", "--warmup", "9", "--repeats", "1", "--json", str(tiny)]) == 0
    assert main(["throughput", "--steps", "10", "--warmup", "9", "--repeats", "0", "--pool", str(tiny)]) == 2
    error = capsys.readouterr().err
    assert str(tiny) in error and "data.image_size=32" in error and "--tiny" in error
    assert main(["throughput", "--repeats", "0"]) == 2 and "--pool" in capsys.readouterr().err
    (tmp_path / "other.json").write_text(json.dumps({"fcn": {}}))
    assert main(["throughput", "--repeats", "0", "--pool", str(tmp_path / "other.json")]) == 2
    assert "other.json: not the --json file of a segkit-bench throughput run" in capsys.readouterr().err


def test_two_segkit_train_configs_are_compared_under_the_same_load(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[list[str]] = []

    def segkit(overrides: list[str], warmup: int, steps: int) -> list[float]:
        launched.append(list(overrides))
        return [0.015 if "callbacks=none" in overrides else 0.016]

    monkeypatch.setattr(throughput, "time_plain", lambda *a: pytest.fail("the plain loop ran in an A/B of configs"))
    monkeypatch.setattr(throughput, "time_segkit", segkit)
    out = tmp_path / "ab.json"
    args = ["throughput", "--tiny", "--steps", "10", "--warmup", "9", "--repeats", "2"]
    assert main([*args, "--against-overrides", "callbacks=none", "--json", str(out)]) == 0
    tiny = ["data.batch_size=8", "data.image_size=32", "model.depth=1", "model.base_width=4"]
    assert launched == [tiny, [*tiny, "callbacks=none"]] * 2  # alternated: the config, then it with the overrides
    result = json.loads(out.read_text())["throughput"]
    assert result["against_overrides"] == ["callbacks=none"]
    assert result["paired_extra_s_per_step"] == pytest.approx(-0.001)  # the second side is 1 ms a step faster
    assert main([*args, "--repeats", "0", "--pool", str(out)]) == 2  # not pooled with segkit against plain
    assert main([*args, "--against-itself", "--against-overrides", "callbacks=none"]) == 2


def test_loops_pick_the_two_sides_alternated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[str] = []

    def loop(name: str, seconds: float):  # noqa: ANN202
        return lambda overrides, warmup, steps: launched.append(name) or [seconds]

    monkeypatch.setattr(throughput, "time_plain", loop("plain", 0.010))
    monkeypatch.setattr(throughput, "time_lightning", loop("lightning", 0.011))
    monkeypatch.setattr(throughput, "time_segkit", loop("segkit", 0.0115))
    out = tmp_path / "ls.json"
    args = ["throughput", "--tiny", "--steps", "10", "--warmup", "9", "--repeats", "2"]
    assert main([*args, "--loops", "lightning", "segkit", "--json", str(out)]) == 0
    assert launched == ["lightning", "segkit"] * 2
    result = json.loads(out.read_text())["throughput"]
    assert result["loops"] == ["lightning", "segkit"] and not result["against_itself"]
    assert result["paired_extra_s_per_step"] == pytest.approx(0.0005)  # what segkit adds to Lightning
    assert main([*args, "--repeats", "0", "--pool", str(out)]) == 2  # not pooled with segkit against plain
    assert main([*args, "--loops", "plain", "plain", "--against-itself"]) == 2  # one way to say it


def test_files_from_before_loops_were_named_keep_their_comparison(tmp_path: Path) -> None:
    record = {"plain_windows_s_per_step": [[0.01]], "segkit_windows_s_per_step": [[0.01]], "overrides": [],
              "steps": 10, "warmup": 9, "against_itself": True}
    (tmp_path / "aa.json").write_text(json.dumps({"throughput": record}))
    (tmp_path / "ab.json").write_text(json.dumps({"throughput": {**record, "against_itself": False,
                                                                 "against_overrides": ["callbacks=none"]}}))
    assert throughput.load_result(tmp_path / "aa.json").loops == ("plain", "plain")
    assert throughput.load_result(tmp_path / "aa.json").against_itself
    assert throughput.load_result(tmp_path / "ab.json").loops == ("segkit", "segkit")


def test_the_interval_shows_how_far_the_alternations_spread_a_figure() -> None:
    def result(pairs_ms: list[float]) -> throughput.ThroughputResult:
        return throughput.ThroughputResult([[0.010]] * len(pairs_ms), [[0.010 + ms / 1e3] for ms in pairs_ms], [], 10)

    steady = result([1.0] * 12)
    assert steady.interval("paired_extra_s") == pytest.approx((0.001, 0.001))
    spread = result([0.1 * k for k in range(1, 13)])  # 0.1 to 1.2 ms apart; median 0.65
    low, high = spread.interval("paired_extra_s")
    assert 0.0001 <= low < 0.00065 < high <= 0.0012
    assert spread.interval("paired_extra_s") == (low, high)  # seeded: the same on every call
    assert low < spread.interval("paired_extra_s", level=0.5)[0]  # a lower level, a narrower interval


def test_the_segkit_side_is_the_console_command_with_its_output_in_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[tuple[list[str], Path]] = []

    def run(command: list[str], log: Path) -> None:
        launched.append((command, log))
        log.write_text("training...\n")

    monkeypatch.setattr(throughput, "_run", run)
    monkeypatch.setattr(throughput, "segkit_step_ends", lambda run_dir: {9: 1.0, 19: 2.5})
    assert throughput.time_segkit(["model.depth=1"], warmup=9, steps=10) == pytest.approx([0.15])
    ((command, log),) = launched
    assert Path(command[0]).name == "segkit-train" and command[1] == "model.depth=1"
    # Only validation and the final test are off: callbacks, logger and scheduler are the defaults'.
    assert {"trainer.max_steps=20", "++trainer.limit_val_batches=0", "test=false"} <= set(command)
    assert not any(arg.startswith(("callbacks", "logger", "model.scheduler")) for arg in command)
    assert log.name == "segkit.log"


def test_step_times_span_the_timed_steps_only() -> None:
    ends = {0: 0.0, 9: 5.0, 19: 6.0, 29: 9.0, 39: 100.0}
    # Steps 9-39 in 10-step windows of 1, 3 and 91 s (a burst of load); steps 0-8 are warm-up.
    assert throughput._windows(ends, warmup=9, steps=30) == pytest.approx([0.1, 0.3, 9.1])
    assert throughput._windows(ends, warmup=9, steps=20) == pytest.approx([0.1, 0.3])  # step 39 left out
    with pytest.raises(SegkitError, match="step 49"):
        throughput._windows(ends, warmup=9, steps=40)
    with pytest.raises(SegkitError, match="multiple of 10"):
        throughput._windows(ends, warmup=9, steps=25)


def test_a_burst_of_load_spoils_one_window_not_the_figure() -> None:
    # Seconds a step in three windows of two runs each. Undisturbed, plain takes 1.0 s a step and
    # segkit 1.2 s; load hit plain's third window in run 1 and most of segkit's run 2.
    result = throughput.ThroughputResult(plain_windows=[[1.0, 1.0, 5.0], [1.0, 3.0, 1.0]],
                                         segkit_windows=[[1.2, 9.0, 1.2], [4.0, 1.2, 4.0]], overrides=[], steps=30)
    assert result.plain == [1.0, 1.0] and result.segkit == [1.2, 4.0]  # each run at its median window
    assert result.extra_s == pytest.approx(0.2)  # best runs
    assert result.median_extra_s == pytest.approx(1.6)  # (1.2 + 4.0) / 2 - 1.0: the long burst counts
    assert result.window_extra_s == pytest.approx(0.2)  # each window at its best run
    assert result.window_ratio == pytest.approx(1.0 / 1.2)


def test_the_median_pair_leaves_out_a_quiet_spell_that_only_one_loop_caught() -> None:
    # Undisturbed, plain takes 1.0 s a step and segkit 1.2 s. The machine was 1.5 times slower
    # for pairs 2 and 3, and quiet only for pair 1's plain run: its segkit run took a burst.
    result = throughput.ThroughputResult(plain_windows=[[1.0], [1.5], [1.5]], segkit_windows=[[1.4], [1.7], [1.7]],
                                         overrides=[], steps=10)
    assert result.extra_s == pytest.approx(0.4)  # best runs: plain's from the quiet spell, segkit's not
    assert result.paired_extra_s == pytest.approx(0.2)  # pairs 0.4, 0.2, 0.2
    assert result.paired_ratio == pytest.approx(1.5 / 1.7)


def test_every_loop_loads_the_batches_segkit_train_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Epoch after epoch (new scenes each epoch with resample_train): the windows of the plain
    loop, the bare Lightning loop and segkit-train then hold the same work."""
    from segkit.data.synthetic.rendered import RenderedDataset
    from segkit.training.run import train

    loaded: list[tuple[int, int]] = []
    render = RenderedDataset.render
    monkeypatch.setattr(RenderedDataset, "render", lambda self, index: loaded.append((self.split_code, int(index)))
                        or render(self, index))
    # 2 steps an epoch: 7 steps reach a third epoch.
    overrides = [*throughput.TINY_NET, "data.train_size=4", "data.batch_size=2", "data.num_workers=0"]
    assert len(plain_loop.plain_step_ends(overrides, 7)) == 7
    plain, loaded[:] = list(loaded), []
    assert len(lightning_loop.lightning_step_ends(overrides, 7)) == 7
    bare_lightning, loaded[:] = list(loaded), []
    train(plain_loop.compose_train_config([*overrides, "trainer.max_steps=7", "++trainer.limit_val_batches=0",
                                           "test=false", "logger=csv"], tmp_path / "run"))
    assert [(split, index // 4) for split, index in plain] == [(0, 0)] * 4 + [(0, 1)] * 4 + [(0, 2)] * 4 + [(0, 3)] * 2
    assert loaded[:14] == plain == bare_lightning[:14]


def test_memory_benchmark_predicts_each_size_in_its_own_process(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    assert main(["memory", "--memory-sizes", "96", "200", "--memory-window", "64", "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["memory"]["runs"]
    assert [run["size"] for run in runs] == [96, 200]
    # 64-px windows with 25 % overlap (stride 48): 2 x 2 of them on 96 px, 4 x 4 on 200 px.
    assert [run["windows"] for run in runs] == [4, 16]
    assert all(run["peak_mib"] >= run["before_image_mib"] > 0 for run in runs)


def test_large_benchmark_runs_segkit_predict_on_tiff_and_zarr_slides(tmp_path: Path) -> None:
    out = tmp_path / "l.json"
    assert main(["large", "--large-sizes", "300", "700", "--large-dir", str(tmp_path / "w"), "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["large"]["runs"]
    assert [(run["kind"], run["size"]) for run in runs] == [("tiff", 300), ("tiff", 700), ("zarr", 300), ("zarr", 700)]
    assert all(run["labels_ok"] and run["peak_rss_mib"] > 100 for run in runs)  # a real process: torch alone is more


def test_existing_json_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "old.json"
    out.write_text("keep me")
    assert main(["throughput", "--json", str(out)]) == 2
    assert out.read_text() == "keep me" and "exists" in capsys.readouterr().err


def test_unknown_benchmark_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nope"])
    assert exit_info.value.code == 2 and "throughput, fcn, dense" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweep_benchmark_continues_a_killed_workers_trial_exactly(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    out = tmp_path / "s.json"
    assert main(["sweep", "--sweep-parts", "killed", "--sweep-dir", str(tmp_path / "w"), "--json", str(out)]) == 0
    killed = json.loads(out.read_text())["sweep"]["killed"]
    # Killed after its step-16 checkpoint (checkpoints every 8 steps), continued from one of them.
    assert killed["killed_at_step"] >= 16 and killed["continued_from_step"] % 8 == 0
    assert killed["continued_from_step"] >= killed["killed_at_step"]
    assert killed["same_weights"] and killed["value"] == killed["reference_value"]
