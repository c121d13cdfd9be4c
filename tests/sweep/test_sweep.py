"""Sweeps: config expansion, the resumable store, local and Ray executors, collect, CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spurlab.cli import app
from spurlab.errors import SpurlabError
from spurlab.studies.study_base import Study, StudyResult, register_study
from spurlab.sweep import ResultStore, collect, expand_runs, load_config, run_sweep, summarize
from spurlab.sweep.executors import task_resources
from spurlab.sweep.targets import parse_target

REPO = Path(__file__).resolve().parents[2]
QUAD = "python:tests.sweep.sweep_helpers:noisy_quadratic"
GRID_X = [0.0, 0.5, 1.0, 2.0]


def quad_config(**overrides) -> dict:
    """12 runs: 4 values of x times 3 seeds."""
    return {"name": "quad", "target": QUAD, "seeds": 3, "fixed": {"sleep": 0.02}, "grid": {"x": GRID_X},
            **overrides}


def sort_table(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["run_id", "metric"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The 12-run sweep on the local process pool (shared by the tests that read it)."""
    out = tmp_path_factory.mktemp("sweep") / "quad"
    outcome = run_sweep(quad_config(), out, executor="local", workers=2)
    return out, outcome


# ------------------------------------------------------------------ config
def test_grid_times_random_times_seeds_expand_to_stable_unique_ids():
    base = {"target": QUAD, "seeds": [0, 1], "grid": {"x": [0.0, 1.0, 2.0]},
            "random": {"scale": {"log_uniform": [1e-3, 1e-1]}}, "samples": 2, "sampler_seed": 7}
    runs = expand_runs(load_config(base))
    assert len(runs) == 3 * 2 * 2
    ids = [r.run_id for r in runs]
    assert len(set(ids)) == len(ids) and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert ids == [r.run_id for r in expand_runs(load_config(base))]  # same config, same ids
    scales = {r.params["scale"] for r in runs}
    assert len(scales) == 2 and all(1e-3 <= s <= 1e-1 for s in scales)
    # the resolved config fills in the function's defaults, and the id hashes it
    assert runs[0].config == {"x": runs[0].params["x"], "scale": runs[0].params["scale"], "sleep": 0.0,
                              "fail_at": None}
    other = expand_runs(load_config({**base, "sampler_seed": 8}))
    assert {r.params["scale"] for r in other}.isdisjoint(scales)
    assert set(ids).isdisjoint(r.run_id for r in other)


def test_toml_and_yaml_configs_give_the_same_runs(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text(f'target = "{QUAD}"\nseeds = 2\n[fixed]\nscale = 0.5\n[grid]\nx = [1.0, 3.0]\n')
    yaml = tmp_path / "s.yaml"
    yaml.write_text(f"target: {QUAD}\nseeds: 2\nfixed: {{scale: 0.5}}\ngrid: {{x: [1.0, 3.0]}}\n")
    assert [r.run_id for r in expand_runs(load_config(toml))] == [r.run_id for r in expand_runs(load_config(yaml))]
    assert load_config(toml).name == "s"


@pytest.mark.parametrize("bad, message", [
    ({"seeds": 2}, "no `target`"),
    ({"target": "notakind:x"}, "cannot read target"),
    ({"target": QUAD, "colour": 1}, "unknown key"),
    ({"target": QUAD, "grid": {"x": 1.0}}, "non-empty list"),
    ({"target": QUAD, "random": {"x": {"uniform": [0, 1]}}}, "`samples` is not"),
    ({"target": QUAD, "samples": 3, "random": {"x": {"gaussian": [0, 1]}}}, "one distribution"),
    ({"target": QUAD, "samples": 3, "random": {"x": {"log_uniform": [0, 1]}}}, "positive bounds"),
    ({"target": QUAD, "grid": {"seed": [1, 2]}}, "`seed` is set"),
    ({"target": QUAD, "fixed": {"x": 1.0}, "grid": {"x": [1.0, 2.0]}}, "more than one"),
    ({"target": QUAD, "seeds": [1, 1]}, "repeats a seed"),
    ({"target": QUAD, "fixed": {"colour": "red"}}, "no parameter(s) ['colour']"),
    ({"target": "python:tests.no_such_module:f"}, "cannot import module"),
    ({"target": "python:tests.sweep.sweep_helpers:nope"}, "has no function"),
    ({"target": "study:no-such-study"}, "unknown study"),
    ({"target": "method:erm", "fixed": {"colour": "red"}}, "has no parameter(s)"),
])
def test_bad_configs_fail_before_anything_runs(bad, message, tmp_path):
    with pytest.raises(SpurlabError) as info:
        run_sweep(bad, tmp_path / "never")
    assert message in str(info.value)
    assert not (tmp_path / "never" / "runs").exists()


# ------------------------------------------------------------------ local executor + store
def test_local_sweep_stores_each_of_12_runs_once_and_resumes(local_sweep):
    out, outcome = local_sweep
    assert (outcome.planned, outcome.succeeded, outcome.failed, outcome.skipped) == (12, 12, 0, 0)
    store = ResultStore(out)
    records = store.records()
    assert len(records) == 12 and len({r["run_id"] for r in records}) == 12
    assert {(r["params"]["x"], r["seed"]) for r in records} == {(x, s) for x in GRID_X for s in range(3)}
    table = store.table()
    assert len(table) == 24 and set(table["metric"]) == {"loss", "offset"}
    assert {"run_id", "target", "experiment", "metric", "value", "seed", "x", "sleep"} <= set(table.columns)
    assert pd.read_parquet(out / "results.parquet").shape == table.shape
    # the same seed gives the same noise whatever x is: the store keeps each run's own rows
    offsets = table[table.metric == "offset"].groupby("seed")["value"].nunique()
    assert (offsets == 1).all()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    again = run_sweep(quad_config(), out, executor="local", workers=2)
    assert (again.skipped, again.ran) == (12, 0)
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert store.status().as_dict() == {"planned": 12, "done": 12, "failed": 0, "pending": 0, "unplanned": 0,
                                        "stale_temp": 0}


def test_collect_gives_mean_and_ci_over_seeds_with_a_figure_per_metric(local_sweep, tmp_path):
    out, _ = local_sweep
    result = collect(out, dest=tmp_path / "collect")
    summary = pd.read_csv(result.summary_path)
    loss = summary[summary.metric == "loss"].set_index("x")
    assert list(loss.index) == GRID_X and (loss["n_seeds"] == 3).all()
    assert loss["mean"].idxmin() == 1.0  # (x - 1)^2 is smallest at x = 1
    table = ResultStore(out).table()
    manual = table[(table.metric == "loss") & (table.x == 2.0)]["value"]
    assert loss.loc[2.0, "mean"] == pytest.approx(manual.mean())
    assert loss.loc[2.0, "ci95_high"] - loss.loc[2.0, "mean"] == pytest.approx(
        4.302653 * manual.std(ddof=1) / np.sqrt(3), rel=1e-5)  # t(0.975, 2 dof)
    assert set(result.figure_paths) == {"loss", "offset"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in result.figure_paths.values())
    assert "data:image/png;base64" in result.report_path.read_text()


def test_summarize_ci_identities():
    table = pd.DataFrame({"metric": ["m"] * 4, "value": [1.0, 2.0, 3.0, 5.0], "seed": [0, 1, 2, 0],
                          "p": [1, 1, 1, 2], "n_seeds": 7})
    out = summarize(table).set_index("p")
    assert (out["n_seeds_param"] == 7).all()  # a parameter named like a statistic is kept, renamed
    assert out.loc[1, "mean"] == 2.0 and out.loc[1, "std"] == 1.0
    assert out.loc[1, "ci95_half"] == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    assert out.loc[2, "n_seeds"] == 1 and np.isnan(out.loc[2, "ci95_half"])


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path):
    cfg = quad_config(fixed={"fail_at": 0.5})
    outcome = run_sweep(cfg, tmp_path / "s", workers=0)
    assert (outcome.succeeded, outcome.failed) == (9, 3)
    store = ResultStore(tmp_path / "s")
    failures = store.failures()
    assert len(failures) == 3 and set(failures["error_type"]) == {"RuntimeError"}
    assert failures["error"].str.contains("deliberate failure at x=0.5").all()
    assert failures["traceback"].str.contains("noisy_quadratic").all()
    assert store.status().as_dict() == {"planned": 12, "done": 9, "failed": 3, "pending": 0,
                                              "unplanned": 0, "stale_temp": 0}
    assert (run_sweep(cfg, tmp_path / "s", workers=0, retry_failed=False).ran) == 0
    retry = run_sweep(cfg, tmp_path / "s", workers=0)
    assert (retry.ran, retry.failed) == (3, 3)
    assert set(store.failures()["attempts"]) == {2}


def test_a_worker_killed_mid_run_fails_only_its_own_run(tmp_path):
    cfg = {"target": "python:tests.sweep.sweep_helpers:crash_at", "seeds": 1, "grid": {"x": [0.0, 1.0, 2.0]}}
    outcome = run_sweep(cfg, tmp_path / "s", workers=2)
    assert (outcome.succeeded, outcome.failed) == (2, 1)
    failures = ResultStore(tmp_path / "s").failures()
    assert list(failures["error_type"]) == ["BrokenProcessPool"]
    assert "died while it ran alone" in failures["traceback"].iloc[0]
    assert sorted(ResultStore(tmp_path / "s").table()["value"]) == [0.0, 2.0]


def test_pool_workers_split_the_cores_instead_of_oversubscribing(tmp_path):
    run_sweep({"target": "python:tests.sweep.sweep_helpers:blas_threads", "seeds": 2}, tmp_path / "s", workers=2)
    expected = int(os.environ.get("OMP_NUM_THREADS", max(1, (os.cpu_count() or 1) // 2)))
    assert list(ResultStore(tmp_path / "s").table()["value"]) == [expected, expected]


def test_a_changed_config_reuses_the_runs_it_shares(tmp_path):
    run_sweep(quad_config(seeds=2, grid={"x": [0.0, 1.0]}), tmp_path / "s", workers=0)
    wider = run_sweep(quad_config(seeds=2, grid={"x": [1.0, 2.0]}), tmp_path / "s", workers=0)
    assert (wider.skipped, wider.succeeded) == (2, 2)  # x = 1.0 was stored by the first config
    state = ResultStore(tmp_path / "s").status()
    assert (state.planned, state.done, state.unplanned) == (4, 4, 2)
    assert sorted(set(ResultStore(tmp_path / "s").table()["x"])) == [0.0, 1.0, 2.0]


def test_a_second_sweep_into_a_busy_folder_is_refused(tmp_path):
    store = ResultStore(tmp_path / "s")
    with store.lock(), pytest.raises(SpurlabError, match="another sweep is writing"):
        run_sweep(quad_config(), tmp_path / "s", workers=0)


def test_sigkill_mid_sweep_then_restart_stores_every_run_exactly_once(tmp_path):
    config = tmp_path / "slow.toml"
    config.write_text(f'name = "slow"\ntarget = "{QUAD}"\nseeds = 3\n[fixed]\nsleep = 0.3\n'
                      f'[grid]\nx = [0.0, 1.0, 2.0, 3.0]\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "spurlab.cli", "sweep", str(config), "--out", str(out), "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(ResultStore(out).done_ids()) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no run finished within 60 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers die at once
    proc.wait()
    store = ResultStore(out)
    before = {r["run_id"]: r for r in store.records()}
    assert 3 <= len(before) < 12
    # what a crash mid-write leaves: a temporary file, and (worse) a truncated record
    (out / "runs" / ".0123456789abcdef.json.x1.tmp").write_text('{"run_id": "0123')
    damaged = sorted(before)[0]
    (out / "runs" / f"{damaged}.json").write_text('{"run_id": "' + damaged)
    assert store.status().stale_temp == 1
    assert damaged not in {r["run_id"] for r in store.records()}  # an unreadable record is not counted
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    records = store.records()
    assert len(records) == 12 and len({r["run_id"] for r in records}) == 12
    assert set(store.plan()) == {r["run_id"] for r in records}
    kept = {r["run_id"]: r for r in records}
    assert all(kept[i]["started"] == before[i]["started"] for i in before if i != damaged)  # not run again
    assert not [p for p in (out / "runs").iterdir() if not p.name.endswith((".json", ".corrupt"))]
    assert store.status().as_dict() == {"planned": 12, "done": 12, "failed": 0, "pending": 0, "unplanned": 0,
                                        "stale_temp": 0}
    assert len(store.table()) == 24


# ------------------------------------------------------------------ ray
def test_the_same_sweep_on_a_local_ray_instance_gives_the_same_table(local_sweep, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'spurlab[ray]'")
    import ray

    out, _ = local_sweep
    assert not ray.is_initialized()
    outcome = run_sweep(quad_config(), tmp_path / "ray", executor="ray", workers=2)
    assert not ray.is_initialized()  # the executor shut down the instance it started
    assert (outcome.succeeded, outcome.failed) == (12, 0)
    local, remote = ResultStore(out).table(), ResultStore(tmp_path / "ray").table()
    pd.testing.assert_frame_equal(sort_table(local), sort_table(remote))


def test_ray_resource_requests_send_gpu_runs_to_gpu_nodes():
    spec = {"device": "auto", "resources": {}}
    assert task_resources(spec, cluster_gpus=0) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert task_resources(spec, cluster_gpus=4) == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert task_resources({"device": "cuda", "resources": {}}, cluster_gpus=0)["num_gpus"] == 1.0
    assert task_resources({"device": "cpu", "resources": {}}, cluster_gpus=4)["num_gpus"] == 0.0
    explicit = {"device": "auto", "resources": {"num_cpus": 2.0, "num_gpus": 0.5}}
    assert task_resources(explicit, cluster_gpus=4) == {"num_cpus": 2.0, "num_gpus": 0.5}


# ------------------------------------------------------------------ targets
@register_study
class TinySweepStudy(Study):
    """A two-parameter study registered by this test module (runs in-process)."""

    name = "test-sweep-tiny"
    title = "tiny"

    def default_config(self, quick: bool) -> dict:
        return {"n": 20 if quick else 2000, "shift": 0.0}

    def validate(self, config: dict) -> None:
        if config["n"] < 2:
            raise SpurlabError("n must be at least 2")

    def run(self, ctx) -> StudyResult:
        sample = ctx.rng().normal(ctx.config["shift"], 1.0, size=ctx.config["n"])
        result = StudyResult()
        result.add("draw", "sample_mean", sample.mean(), ctx.seed, n=ctx.config["n"])
        return result


def test_study_target_sweeps_the_set_keys(tmp_path):
    target = parse_target("study:test-sweep-tiny")
    assert target.parameters(quick=True) == {"n": 20, "shift": 0.0}
    with pytest.raises(SpurlabError, match="n must be at least 2"):
        target.resolve({"n": 1})
    cfg = {"target": "study:test-sweep-tiny", "seeds": 4, "grid": {"shift": [0.0, 5.0]}, "fixed": {"n": 400}}
    quick_ids = {r.run_id for r in expand_runs(load_config(cfg))}
    assert quick_ids.isdisjoint(r.run_id for r in expand_runs(load_config({**cfg, "quick": False})))
    run_sweep(cfg, tmp_path / "s", workers=0)
    summary = collect(tmp_path / "s", report=False).summary.set_index("shift")
    assert list(summary["n_seeds"]) == [4, 4] and set(summary["n"]) == {400}
    assert summary.loc[5.0, "mean"] - summary.loc[0.0, "mean"] == pytest.approx(5.0, abs=0.3)


def test_a_real_quick_study_sweeps_its_set_keys(tmp_path):
    from spurlab.studies.study_base import study_registry

    assert "spurious-memorization" in study_registry()
    cfg = {"target": "study:spurious-memorization", "seeds": 2, "grid": {"alpha": [[0.5], [0.25]]},
           "fixed": {"experiments": ["synthetic"], "models": ["rf"], "rf_activations": ["phi2"], "d": 100,
                     "N": [10], "rf_k": 200, "n_test": 50}}
    outcome = run_sweep(cfg, tmp_path / "s", workers=0)
    assert (outcome.succeeded, outcome.failed) == (4, 0)
    table = ResultStore(tmp_path / "s").table()
    assert set(table["alpha"]) == {0.5, 0.25}  # the study's own per-row column wins over the JSON text
    summary = collect(tmp_path / "s", report=False).summary
    assert (summary["n_seeds"] == 2).all()
    gamma = summary[summary.metric == "gamma_high_n"]
    assert (gamma["ci95_half"] == 0).all() and gamma["mean"].nunique() == 2  # closed forms differ by alpha
    small_n = summary[(summary.metric == "spurious_acc") & (summary.N == 10)]
    assert (small_n["mean"] > 0.5).all()  # memorized: the spurious part alone recovers training labels


def test_python_target_wide_rows_become_metrics():
    frame = parse_target("python:tests.sweep.sweep_helpers:wide_rows").run({"width": 3}, seed=2, quick=True,
                                                                      device="cpu")
    assert list(frame["metric"]) == ["area"] and frame["value"].iloc[0] == 11.0
    assert set(frame.columns) == {"width", "label", "seed", "metric", "value"}


def test_method_target_trains_and_reports_group_metrics():
    target = parse_target("method:erm")
    params = target.parameters()
    assert params["dataset"] == "spurious-digits" and "lr" in params and "epochs" in params
    frame = target.run({"epochs": 1, "model": "linear"}, seed=0, quick=True, device="cpu")
    assert {"worst_group_acc", "mean_group_acc", "group_acc"} <= set(frame["metric"])
    assert set(frame["split"]) == {"val", "test"}
    worst = frame[(frame.metric == "worst_group_acc") & (frame.split == "test")]["value"].iloc[0]
    groups = frame[(frame.metric == "group_acc") & (frame.split == "test")]["value"]
    assert worst == pytest.approx(groups.min())


# ------------------------------------------------------------------ CLI
def test_cli_sweep_config_status_collect_and_params(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'target = "{QUAD}"\nseeds = 2\n[fixed]\nfail_at = 2.0\n[grid]\nx = [0.0, 2.0]\n')
    runner = CliRunner()
    out = tmp_path / "out"
    dry = runner.invoke(app, ["sweep", str(config), "--dry-run"])
    assert dry.exit_code == 0 and "4 runs" in dry.output and not out.exists()
    first = runner.invoke(app, ["sweep", str(config), "--out", str(out), "--workers", "0"])
    assert first.exit_code == 1, first.output  # two runs failed on purpose
    assert "2 finished, 2 failed" in first.output
    again = runner.invoke(app, ["sweep", "run", str(config), "--out", str(out), "--workers", "0", "--skip-failed"])
    assert again.exit_code == 0 and "4 already stored" in again.output
    status = runner.invoke(app, ["sweep", "status", str(out), "--failures"])
    assert status.exit_code == 0 and "deliberate failure" in status.output and "Traceback" in status.output
    collected = runner.invoke(app, ["sweep", "collect", str(out)])
    assert collected.exit_code == 0 and (out / "collect" / "summary.csv").is_file()
    params = runner.invoke(app, ["sweep", "params", QUAD])
    assert params.exit_code == 0 and "fail_at" in params.output
    missing = runner.invoke(app, ["sweep", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())
    bad_exec = runner.invoke(app, ["sweep", str(config), "--out", str(out), "--address", "auto"])
    assert bad_exec.exit_code == 2 and "--executor ray" in " ".join(bad_exec.output.split())
    assert json.loads((out / "plan.json").read_text())["runs"]
