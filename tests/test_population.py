"""Populations: `sweep --grid ... --together` trains the members as one program; each member's
workdir is a run alone's, within float tolerance; resume, a diverging member and refusals."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, fingerprint, run_module, runner_args, tiny_config
from fashion_jax import config as config_lib
from fashion_jax import population, sweep
from fashion_jax import train as train_lib
from fashion_jax.trained import load_trained

GRID = ["--seeds", "0,1", "--grid", "learning_rate=0.001,0.003"]
# Half of GRID: its two members' workdirs have the same names as two of GRID's (the unrolled
# layout computes each member as its run alone does, whatever the other members).
HALF = ["--seeds", "0,1", "--grid", "learning_rate=0.001"]


def relative_difference(a, b) -> float:
    """||a - b|| / ||a|| over all parameters of two TrainStates."""
    la, lb = jax.tree.leaves(a.params), jax.tree.leaves(b.params)
    num = sum(float(np.sum((np.asarray(x) - np.asarray(y)) ** 2)) for x, y in zip(la, lb))
    return (num / sum(float(np.sum(np.asarray(x) ** 2)) for x in la)) ** 0.5


@pytest.fixture(scope="module")
def together(tmp_path_factory, tiny_idx, tiny_tfds):
    """Seeds 0, 1 x learning rates 0.001, 0.003 of the tiny run, trained as one population."""
    w = tmp_path_factory.mktemp("pop") / "sweep"
    args = ["--workdir", str(w), *GRID, "--together", *runner_args(tiny_idx, tiny_tfds)]
    assert sweep.main(args) == 0
    return w, args


def test_each_member_is_a_run_alone_within_float_tolerance(together, tmp_path, tiny_idx, tiny_tfds):
    from fashion_jax import predict, run

    w, _ = together
    names = sorted(p.name for p in w.iterdir() if p.is_dir())
    assert names == [f"learning_rate={lr}-seed_{s}" for lr in ("0.001", "0.003") for s in (0, 1)]
    member = w / "learning_rate=0.003-seed_1"
    alone = tmp_path / "alone"
    args = runner_args(tiny_idx, tiny_tfds, seed=1, learning_rate=0.003)
    assert run.main(["--workdir", str(alone), *args]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (alone, member))
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.005, (a, b)
    assert a["steps"] == b["steps"] == 40
    (ca, sa), (cb, sb) = load_trained(alone), load_trained(member)
    assert int(sa.step) == int(sb.step) == 40
    # On CPU the default layout is "unrolled": each member's step is its lone run's program.
    for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert ca.to_dict() == {**cb.to_dict(), "progress_bar": ca.progress_bar}
    records = [json.loads(line) for line in (member / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["type"] == "eval"] == [20, 40]
    assert (member / "report.md").is_file() and (
        member / "plots" / "confusion_matrix.png"
    ).is_file()
    assert predict.main(["--workdir", str(member), "--index", "0"]) == 0


def test_the_vmap_layout_matches_a_run_alone_within_float_tolerance(tmp_path, tiny_idx, tiny_tfds):
    """The batched program rounds differently; over the tiny run (40 Adam steps) the members stay
    within 2e-3 of their lone runs (on long runs training amplifies it: docs/populations.md)."""
    configs = [tiny_config(tiny_idx, tiny_tfds, seed=s, learning_rate=0.003) for s in (0, 1)]
    workdirs = [tmp_path / "m0", tmp_path / "m1"]
    together = population.train_population(configs, workdirs, report=False, layout="vmap")
    alone = train_lib.train_and_evaluate(configs[1], tmp_path / "alone", report=False)
    assert abs(together[1]["test_accuracy"] - alone["test_accuracy"]) <= 0.005
    (_, sa), (_, sb) = load_trained(tmp_path / "alone"), load_trained(workdirs[1])
    assert relative_difference(sa, sb) < 2e-3


def test_the_sweep_table_has_the_grid_and_the_mean_per_point(together, capsys):
    w, args = together
    result = json.loads((w / "sweep.json").read_text())
    assert result["together"] is True and result["grid"] == {"learning_rate": ["0.001", "0.003"]}
    assert [(r["learning_rate"], r["seed"]) for r in result["seeds"]] == [
        ("0.001", 0),
        ("0.001", 1),
        ("0.003", 0),
        ("0.003", 1),
    ]
    for point in result["points"]:
        accs = [
            r["test_accuracy"]
            for r in result["seeds"]
            if r["learning_rate"] == point["learning_rate"]
        ]
        assert point["seeds"] == 2 and point["test_accuracy_mean"] == pytest.approx(np.mean(accs))
    stamp = {p: (w / p / "summary.json").stat().st_mtime for p in ("learning_rate=0.001-seed_0",)}
    assert sweep.main(args) == 0  # Finished: nothing retrained, the table printed again.
    assert (w / "learning_rate=0.001-seed_0" / "summary.json").stat().st_mtime == stamp[
        "learning_rate=0.001-seed_0"
    ]
    assert "test acc mean ± std" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (["--grid", "learning_rat=0.1"], "learning_rat"),
        (["--grid", "learning_rate=fast"], "--grid learning_rate=fast"),
        (["--grid", "model=convnet_s,seed_cnn"], "a grid cannot vary model"),
        (["--grid", "learning_rate"], "KEY=V1,V2"),
        (["--grid", "warmup_epochs=0,1", "--together"], "warmup_epochs"),
        (
            ["--grid", "momentum=0,0.9", "--together", "--config.optimizer=sgd"],
            "mix 0 and non-zero",
        ),
    ],
)
def test_a_bad_grid_is_one_error_line_and_writes_nothing(
    tmp_path, tiny_idx, tiny_tfds, capsys, flags, fragment
):
    w = tmp_path / "sweep"
    w.mkdir()
    before = fingerprint(w)
    args = ["--workdir", str(w), "--seeds", "0", *flags, *runner_args(tiny_idx, tiny_tfds)]
    assert sweep.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err and fragment in err, err
    assert fingerprint(w) == before and list(w.iterdir()) == []


def test_a_rerun_over_another_grid_is_refused(together, capsys):
    w, args = together
    before = fingerprint(w)
    other = [a if a != "learning_rate=0.001,0.003" else "learning_rate=0.01" for a in args]
    assert sweep.main(other) == 2
    assert "holds a sweep over another grid" in capsys.readouterr().err
    assert fingerprint(w) == before


def test_a_population_that_does_not_fit_is_refused_with_the_estimate(
    tmp_path, tiny_idx, tiny_tfds, monkeypatch, capsys
):
    monkeypatch.setattr(population.os, "sysconf", lambda name: 1024)  # A 1 MiB machine.
    w = tmp_path / "sweep"
    args = ["--workdir", str(w), *GRID, "--together", *runner_args(tiny_idx, tiny_tfds)]
    assert sweep.main(args) == 2
    err = capsys.readouterr().err
    assert "4 members need about" in err and "GiB" in err and err.count("error:") == 1, err
    assert not w.exists()


def test_a_diverging_member_stops_and_the_others_finish(tmp_path, tiny_idx, tiny_tfds):
    configs = [
        tiny_config(tiny_idx, tiny_tfds, optimizer="sgd", learning_rate=lr, num_epochs=1)
        for lr in (0.05, 1e30)
    ]
    workdirs = [tmp_path / "ok", tmp_path / "nan"]
    ok, bad = population.train_population(configs, workdirs, report=False)
    assert "non-finite" in bad["stopped"] and "stopped" not in ok
    assert ok["test_accuracy"] > 0.5 and ok["steps"] == 20
    assert not (workdirs[1] / "checkpoints" / "20").exists()  # Nothing non-finite is saved.


def test_members_that_differ_in_a_structural_key_are_refused_in_the_api():
    a = config_lib.get_config()
    b = config_lib.apply_overrides(a, {"model": "fast_cnn"})
    with pytest.raises(config_lib.ConfigError, match="model"):
        population.varying([a, b])
    c = config_lib.apply_overrides(a, {"seed": "3", "learning_rate": "0.01"})
    assert population.varying([a, c]) == {"learning_rate": [0.001, 0.01]}


def _population(w, args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "fashion_jax.sweep", "--workdir", str(w), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=ROOT,
    )


def _evals(workdir):
    """The eval records of a workdir without their timings."""
    return [
        {k: v for k, v in json.loads(line).items() if k != "epoch_seconds"}
        for line in (workdir / "metrics.jsonl").open()
        if '"eval"' in line
    ]


def test_a_killed_population_resumes_bit_for_bit(tmp_path, tiny_idx, tiny_tfds, together):
    """kill -9 twice (after its first checkpoints, then after more), the same command resumes;
    the members end equal to the uninterrupted population's, bit for bit."""
    reference, _ = together
    args = [*HALF, "--together", *runner_args(tiny_idx, tiny_tfds)]
    w = tmp_path / "sweep"
    for step in (10, 30):
        proc = _population(w, args)
        deadline = time.time() + 300
        first = w / "learning_rate=0.001-seed_0" / "checkpoints" / str(step)
        while not first.is_dir() and time.time() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_module("fashion_jax.sweep", "--workdir", w, *args, check=True)
    names = [p.name for p in w.iterdir() if p.is_dir()]
    assert sorted(names) == ["learning_rate=0.001-seed_0", "learning_rate=0.001-seed_1"]
    for name in names:
        _, a = load_trained(reference / name)
        _, b = load_trained(w / name)
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert _evals(reference / name) == _evals(w / name)


def test_a_population_over_two_processes_matches_one_process(
    tmp_path, tiny_idx, tiny_tfds, together
):
    """The multi-host recipe: two processes of two simulated devices each join one mesh and train
    the same population; every member is written once, by process 0."""
    from test_distributed import free_port

    reference, _ = together
    w, port = tmp_path / "sweep", free_port()
    procs = []
    for pid in range(2):
        cluster = runner_args(
            tiny_idx,
            tiny_tfds,
            distributed="true",
            coordinator_address=f"localhost:{port}",
            num_processes=2,
            process_id=pid,
        )
        env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        procs.append(_population(w, [*HALF, "--together", *cluster], env=env))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "over 4 device(s) (cpu), 2 process(es)" in outs[0][0]
    one = json.loads((reference / "sweep.json").read_text())["seeds"]
    two = json.loads((w / "sweep.json").read_text())["seeds"]
    assert [(r["learning_rate"], r["seed"]) for r in two] == [("0.001", 0), ("0.001", 1)]
    for a, b in zip(one, two):  # GRID's first two rows are these members.
        assert (a["learning_rate"], a["seed"]) == (b["learning_rate"], b["seed"])
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.005, (a, b)
    for name in (p.name for p in w.iterdir() if p.is_dir()):
        assert len(_evals(w / name)) == 2  # Written once.
