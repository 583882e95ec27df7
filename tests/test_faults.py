"""Faults outside the one-line table of tests/test_bad_inputs.py: notes, races, real full disks,
interruptions at awkward moments, and the Python API's own checks."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_clean_error, run_here, run_module, runner_args, start


def test_a_workdir_without_config_py_says_it_trains_the_defaults(tmp_path, capsys):
    """A misspelt experiment name is named, with the close one beside it, in one note line."""
    from fashion_jax import run

    (tmp_path / "convnet_5ep").mkdir()
    (tmp_path / "convnet_5ep" / "config.py").write_text("")
    config = run.resolve_config(str(tmp_path / "convnet_5epp"), None, {"num_epochs": "3"})
    out = capsys.readouterr().out
    assert config.num_epochs == 3 and config.model == "seed_cnn"
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1, out
    assert "trains the defaults" in notes[0]
    assert f"Did you mean --workdir {tmp_path / 'convnet_5ep'}?" in notes[0]
    assert "experiments/<name>/config.py" in notes[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_idx, tiny_tfds):
    """A finished one-epoch tiny run (20 steps)."""
    from fashion_jax import run

    w = tmp_path_factory.mktemp("trained") / "w"
    assert run.main(["--workdir", str(w), *runner_args(tiny_idx, tiny_tfds, num_epochs=1)]) == 0
    return w


def _png(path: Path, array, mode=None):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def _shirt(value=255, size=40):
    """A bright square on a dark background (uint8[size, size]) scaled to `value`."""
    a = np.zeros((size, size), np.float64)
    a[8:32, 12:28] = 1.0
    a[14:20, 16:24] = 0.5
    return a * value


def test_sixteen_bit_and_transparent_images_read_as_their_eight_bit_selves(tmp_path):
    """A 16-bit PNG is scaled, not clipped; a drawing in the alpha channel alone reads as the
    same drawing light on dark (more cases: tests/test_trust.py)."""
    from fashion_jax import predict

    eight = predict.load_image_file(_png(tmp_path / "8.png", _shirt(255).astype(np.uint8)))
    sixteen = predict.load_image_file(_png(tmp_path / "16.png", _shirt(65535).astype(np.uint16)))
    assert eight.max() == 255 and np.abs(eight.astype(int) - sixteen.astype(int)).max() <= 1
    # An icon: a black drawing on a transparent background (RGBA 0,0,0,0 outside).
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 3] = (_shirt(255) > 0) * 255
    icon = predict.load_image_file(_png(tmp_path / "icon.png", rgba))
    on_white = predict.load_image_file(
        _png(tmp_path / "white.png", (255 - (_shirt(255) > 0) * 255).astype(np.uint8))
    )
    assert icon.max() == 255 and (icon > 25).sum() > 100
    np.testing.assert_array_equal(icon, on_white)


def test_predict_keeps_every_figure_of_inputs_with_the_same_name(trained, tmp_path, capsys):
    from fashion_jax import predict

    a = _png(tmp_path / "a" / "shirt.png", _shirt(255).astype(np.uint8))
    b = _png(tmp_path / "b" / "shirt.png", (255 - _shirt(255)).astype(np.uint8))
    assert predict.main(["--workdir", str(trained), str(a), str(b)]) == 0
    out = capsys.readouterr().out
    figures = sorted(p.name for p in (trained / "predictions").iterdir())
    assert figures == ["shirt.png", "shirt_2.png"], (figures, out)
    one = tmp_path / "one.png"
    assert predict.main(["--workdir", str(trained), "--output", str(one), str(a)]) == 0
    assert one.is_file() and sorted(p.name for p in (trained / "predictions").iterdir()) == figures


def test_a_sweep_rerun_with_a_resumable_key_keeps_finished_seeds(
    tmp_path, tiny_idx, tiny_tfds, capsys
):
    """Changing only how a run is watched (log_every_steps) does not retrain or re-time a seed."""

    from fashion_jax import sweep

    args = ["--workdir", str(tmp_path / "s"), "--seeds", "0"]
    args += runner_args(tiny_idx, tiny_tfds, num_epochs=1)
    assert sweep.main(args) == 0
    first = json.loads((tmp_path / "s" / "sweep.json").read_text())
    capsys.readouterr()
    assert sweep.main([*args, "--config.log_every_steps=10"]) == 0
    out = capsys.readouterr().out
    assert "Resuming" not in out and "Training" not in out, out
    again = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert again["seeds"][0]["wall_seconds"] == first["seeds"][0]["wall_seconds"] > 0


def _free_port() -> int:

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_distributed_run_whose_coordinator_is_unreachable_stops_with_one_line(
    tmp_path, tiny_args
):
    """Nobody listens at the coordinator process 1 is given: one error line within the timeout
    (plus start-up), not a C++ abort."""
    process_id = 1

    start = time.perf_counter()
    proc = run_module(
        "fashion_jax.run",
        "--workdir",
        tmp_path / "w",
        *tiny_args,
        "--config.distributed=true",
        f"--config.coordinator_address=127.0.0.1:{_free_port()}",
        "--config.num_processes=2",
        f"--config.process_id={process_id}",
        "--config.distributed_timeout_seconds=5",
        timeout=120,
    )
    assert_clean_error(
        proc, "Could not join the distributed run", "distributed_timeout_seconds = 5"
    )
    assert proc.stderr.count("error:") == 1 and "Check failure" not in proc.stderr, proc.stderr
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "w").exists()  # Nothing was written.


def test_distributed_without_a_coordinator_is_one_line(tmp_path, tiny_args):

    proc = run_module(
        "fashion_jax.run",
        "--workdir",
        tmp_path / "w",
        *tiny_args,
        "--config.distributed=true",
        timeout=120,
    )
    assert_clean_error(proc, "distributed = true, but", "coordinator_address=HOST:PORT")


def test_a_damaged_dataset_info_is_one_error(tmp_path, tiny_tfds):
    from fashion_jax import data
    from fashion_jax.errors import DataError

    shutil.copytree(tiny_tfds, tmp_path / "tfds")
    (info,) = (tmp_path / "tfds").rglob("dataset_info.json")
    info.write_text('{"name": "fashion_mnist", "splits": [')
    with pytest.raises(DataError, match="cannot be read.*Move that folder away"):
        data.load(str(tmp_path / "tfds"), str(tmp_path / "no_idx"), download=False)


@contextlib.contextmanager
def small_filesystem(path: Path, size: str):
    """A tmpfs of `size` mounted at `path` (root only; skips the test otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if mounted.returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_prepared_dataset_without_its_cache_still_loads(tmp_path, tiny_tfds):
    """A read-only mount refuses even the unlink of a missing file (EROFS): the cache is skipped."""
    from fashion_jax import data

    with small_filesystem(tmp_path / "ro", "64m") as root:
        shutil.copytree(tiny_tfds, root / "tfds")
        for cache in (root / "tfds").rglob(data.CACHE_NAME):
            cache.unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        splits = data.load(str(root / "tfds"), str(tmp_path / "no_idx"), download=False)
        assert len(splits["train"].labels) == 640 and len(splits["test"].labels) == 200
        assert not list((root / "tfds").rglob(data.CACHE_NAME))


def test_a_reader_lists_again_when_retention_removed_what_it_listed(trained, tmp_path, monkeypatch):
    """predict beside a trainer: the steps it listed are deleted (retention) and a newer one
    appears before it reads; it reads the newer one instead of finding nothing."""
    from fashion_jax import checkpoints
    from fashion_jax import trained as trained_lib

    w = tmp_path / "w"
    shutil.copytree(trained, w)
    assert sorted(p.name for p in (w / "checkpoints").iterdir()) == ["10", "20"]
    shutil.move(w / "checkpoints" / "20", tmp_path / "20")  # Not written yet when listed.
    init = checkpoints.Checkpoints.__init__

    def listed_then_raced(self, *args, **kwargs):
        init(self, *args, **kwargs)
        assert self.steps() == [10]
        shutil.rmtree(w / "checkpoints" / "10")  # Retention, after the trainer saved step 20.
        shutil.move(tmp_path / "20", w / "checkpoints" / "20")

    monkeypatch.setattr(checkpoints.Checkpoints, "__init__", listed_then_raced)
    config, state = trained_lib.load_trained(w)
    assert int(state.step) == 20


def test_a_workdir_renamed_mid_run_stops_with_one_line_and_resumes(tmp_path, tiny_args):
    """Renaming (or deleting) the workdir under a trainer stops it at the next log or save step,
    instead of ending with exit 0 and a run split in two folders; moving it back resumes."""

    w, moved = tmp_path / "w", tmp_path / "moved"
    args = [*tiny_args, "--config.num_epochs=6", "--config.log_every_steps=2"]
    proc = start(w, args)
    deadline = time.time() + 240
    while not (w / "checkpoints" / "10").is_dir() and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    w.rename(moved)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert err.count("error:") == 1 and "Traceback" not in err, err
    assert "was deleted, moved or renamed" in err
    assert not w.exists() or not (w / "checkpoints").exists()  # Nothing split off.
    moved.rename(w)
    done = run_here("fashion_jax.run", "--workdir", w, *args, check=True)
    assert "Resuming from the checkpoint" in done.stdout
    assert json.loads((w / "summary.json").read_text())["steps"] == 120


def _evals(workdir: Path) -> list[dict]:

    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [
        {k: v for k, v in r.items() if not k.endswith("seconds")}
        for r in records
        if r["type"] == "eval"
    ]


def test_a_real_full_disk_is_one_line_and_the_run_resumes_exactly(tmp_path, tiny_args):
    """A 3 MB file system holds one checkpoint (1.6 MB) but not two: the second save fails for
    real (no mock). One error line, the first checkpoint intact, and after space is freed the
    same command resumes and ends exactly where an uninterrupted run ends."""

    with small_filesystem(tmp_path / "disk", "3m") as disk:
        full = run_module("fashion_jax.run", "--workdir", disk / "w", *tiny_args, timeout=300)
        assert full.returncode == 2, (full.returncode, full.stderr[-3000:])
        assert full.stderr.count("error:") == 1 and "Traceback" not in full.stderr, full.stderr
        assert "error: cannot write (No space left on device" in full.stderr
        complete = [p.name for p in (disk / "w" / "checkpoints").iterdir() if p.name.isdigit()]
        assert complete == ["10"], complete
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed = run_here("fashion_jax.run", "--workdir", disk / "w", *tiny_args, check=True)
        assert "Resuming from the checkpoint at step 10" in resumed.stdout
        got = _evals(disk / "w")
    run_here("fashion_jax.run", "--workdir", tmp_path / "ref", *tiny_args, check=True)
    assert got == _evals(tmp_path / "ref") and len(got) == 2


LATE_CALLBACKS = """
import asyncio, sys, threading, types
from fashion_jax import exits

def closed_loop_callback():
    loop = asyncio.new_event_loop()
    loop.close()
    loop.call_soon_threadsafe(print)  # What TensorStore does when a write outlives Orbax's loop.

def body():
    try:  # Native code prints what it cannot raise through sys.excepthook (PyErr_Print).
        closed_loop_callback()
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    try:  # Or as unraisable (PyErr_WriteUnraisable).
        closed_loop_callback()
    except RuntimeError as e:
        sys.unraisablehook(types.SimpleNamespace(exc_value=e, exc_traceback=e.__traceback__))
    thread = threading.Thread(target=closed_loop_callback)  # Uncaught in a thread.
    thread.start()
    thread.join()
    try:
        raise RuntimeError("Event loop is closed")  # The same words from elsewhere still print.
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    return 0

sys.exit(exits.guarded(body, "CMD", {}))
"""


def test_callbacks_into_a_closed_event_loop_print_nothing():
    """A save that fails on a full disk leaves TensorStore writes in flight; when they finish,
    their callbacks into Orbax's closed event loop raise `RuntimeError: Event loop is closed`, which
    native code printed as tracebacks before the command's one error line. They print nothing,
    whether through sys.excepthook, as unraisable or uncaught in a thread; the same error raised
    elsewhere still prints."""
    proc = subprocess.run(
        [sys.executable, "-c", LATE_CALLBACKS], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("Traceback") == 1, proc.stderr
    assert "call_soon_threadsafe" not in proc.stderr, proc.stderr
    assert "in body\nRuntimeError: Event loop is closed" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_a_run_interrupted_at_any_moment_resumes_by_rerunning_it(tmp_path, tiny_args, trained):
    """SIGINT during start-up and the first compilation, then SIGTERM and kill -9 in the window
    between checkpoints/ appearing and config.json being written: each ends without a traceback
    (or dies, for kill -9), and rerunning the same command finishes the run exactly."""

    w = tmp_path / "w"
    args = [*tiny_args, "--config.num_epochs=1"]

    def in_window(proc):
        return (w / "checkpoints").is_dir() and not (w / "config.json").exists()

    def compiling(proc):  # The lock is taken just before the data is loaded and compiled for.
        lock = w / ".lock"
        return lock.is_file() and f"pid {proc.pid} " in lock.read_text()

    moments = [
        ("SIGINT during the first compilation", signal.SIGINT, compiling),
        ("SIGTERM in the window", signal.SIGTERM, in_window),
        ("kill -9 in the window", signal.SIGKILL, in_window),
    ]
    landed = []
    for k, (name, sig, moment) in enumerate(moments):
        proc = start(w, args)
        since = time.time()
        while proc.poll() is None and not moment(proc) and time.time() - since < 120:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(sig)
            landed.append(name)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, (name, err[-3000:])
        if proc.returncode not in (0, -signal.SIGKILL):
            assert proc.returncode == 128 + sig, (name, proc.returncode, err[-2000:])
        if (w / "summary.json").exists():  # This attempt finished: start the next afresh.
            shutil.rmtree(w)
        folder = w / "checkpoints"
        if k < len(moments) - 1 and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # So the next attempt's window is its own (the last one's is kept).
    assert len(landed) >= 2, landed
    done = run_here("fashion_jax.run", "--workdir", w, *args, check=True)
    assert _evals(w) == _evals(trained) and len(_evals(w)) == 1, done.stdout  # Same config.


def test_a_typo_on_the_default_config_raises():
    from fashion_jax import config as config_lib

    c = config_lib.get_config()
    c.learning_rate = 0.5
    with pytest.raises(AttributeError, match="lerning_rate"):
        c.lerning_rate = 1.0


def test_the_python_api_checks_its_config(tmp_path):
    import ml_collections

    from fashion_jax import config as config_lib
    from fashion_jax.errors import ConfigError
    from fashion_jax.train import train_and_evaluate

    c = config_lib.get_config()
    c.batch_size = 0
    with pytest.raises(ConfigError, match="batch_size = 0 is out of range"):
        train_and_evaluate(c, tmp_path / "w")
    c = ml_collections.ConfigDict(config_lib.get_config().to_dict() | {"model": "resnet1000"})
    with pytest.raises(ConfigError, match="model 'resnet1000' is unknown"):
        train_and_evaluate(c, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_the_api_trains_in_a_thread_and_load_trained_continues_its_schedule(
    tmp_path, tiny_idx, tiny_tfds
):
    """No signal handlers outside the main thread; load_trained's optimizer has the run's length
    (a finished cosine run's learning rate is 0, so one more update is exactly 0)."""
    import threading

    import jax

    from fashion_jax import config as config_lib
    from fashion_jax import optimizers
    from fashion_jax import trained as trained_lib
    from fashion_jax.train import train_and_evaluate

    overrides = {
        a[len("--config.") :].split("=")[0]: a.split("=", 1)[1]
        for a in runner_args(tiny_idx, tiny_tfds, num_epochs=1, schedule="cosine")
    }
    config = config_lib.validate(config_lib.apply_overrides(config_lib.get_config(), overrides))
    results = []
    thread = threading.Thread(
        target=lambda: results.append(train_and_evaluate(config, tmp_path / "w"))
    )
    thread.start()
    thread.join(300)
    assert results and results[0]["steps"] == 20, results
    loaded_config, state = trained_lib.load_trained(tmp_path / "w")
    grads = jax.tree.map(lambda p: p * 0 + 1, state.params)
    update = state.tx.update(grads, state.opt_state, state.params)[0]
    assert max(float(abs(u).max()) for u in jax.tree.leaves(update)) == 0.0
    longer = optimizers.make_optimizer(loaded_config, 1 << 20)
    other = longer.update(grads, state.opt_state, state.params)[0]
    assert max(float(abs(u).max()) for u in jax.tree.leaves(other)) > 0
