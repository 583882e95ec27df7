"""End-to-end runs of `python -m fashion_jax.run` and `fashion_jax.predict` on tiny generated data."""

import json

import pytest

from conftest import assert_clean_error, run_module


@pytest.mark.slow
def test_runner_trains_and_writes_its_files(tmp_path, tiny_args):
    workdir = tmp_path / "w"
    # The command's own compilation cache (no JAX_COMPILATION_CACHE_DIR): under XDG_CACHE_HOME.
    home = {"JAX_COMPILATION_CACHE_DIR": None, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = run_module("fashion_jax.run", "--workdir", workdir, *tiny_args, env=home, check=True)
    assert "test accuracy" in proc.stdout
    assert len(list((tmp_path / "cache" / "fashion_jax" / "xla").iterdir())) >= 3
    for name in ("config.json", "metrics.jsonl", "summary.json", "checkpoints"):
        assert (workdir / name).exists(), name
    config = json.loads((workdir / "config.json").read_text())
    assert config["num_epochs"] == 2 and config["batch_size"] == 32
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    steps_per_epoch = 640 // 32
    assert [r["step"] for r in evals] == [steps_per_epoch, 2 * steps_per_epoch]
    assert [r["step"] for r in train] == list(range(5, 2 * steps_per_epoch + 1, 5))
    summary = json.loads((workdir / "summary.json").read_text())
    assert (
        summary["steps"] == 2 * steps_per_epoch
        and summary["epochs"] == 2
        and summary["devices"] >= 1
    )
    assert summary["test_accuracy"] == evals[-1]["test_accuracy"]
    assert summary["test_accuracy"] > 0.5  # The tiny dataset is easy: chance is 0.1.
    assert {"jax", "flax", "optax"} <= set(summary["versions"])
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 2 * steps_per_epoch

    tags = tensorboard_scalars(workdir / "tensorboard")
    assert tags["eval/test_accuracy"] == [r["step"] for r in evals]
    assert tags["train/loss"] == [r["step"] for r in train]

    pred = run_module("fashion_jax.predict", "--workdir", workdir, "--index", "0", check=True)
    assert "test image 0: predicted" in pred.stdout and "true" in pred.stdout
    png = workdir / "predictions" / "test_0.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def tensorboard_scalars(folder):
    """{tag: [steps]} of the scalar summaries in the TensorBoard event files under `folder`."""
    import tensorflow as tf

    tags = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    tags.setdefault(value.tag, []).append(event.step)
    return tags


def test_a_refused_config_ends_the_process_with_status_2_and_one_line(tmp_path):
    """The process-level path of every refusal (tests/test_bad_inputs.py checks each one in
    process, through the same `main`): `python -m fashion_jax.run` exits 2 with one `error:` line
    and no traceback, and writes nothing."""
    w = tmp_path / "w"
    proc = run_module("fashion_jax.run", "--workdir", w, "--config.batchsize=8")
    assert_clean_error(proc, "Unknown config key 'batchsize'", "batch_size")
    assert proc.stderr.count("error:") == 1
    assert not w.exists()


@pytest.mark.slow
def test_a_cache_folder_that_cannot_be_made_does_not_stop_the_run(tmp_path, tiny_args):
    """The compilation cache is a speed-up only: under a file (no folder can be made there), the
    run trains, evaluates and writes its files as without it."""
    (tmp_path / "file").write_text("")
    env = {"JAX_COMPILATION_CACHE_DIR": None, "XDG_CACHE_HOME": str(tmp_path / "file" / "c")}
    w = tmp_path / "w"
    proc = run_module("fashion_jax.run", "--workdir", w, *tiny_args, env=env, check=True)
    assert "test accuracy" in proc.stdout and "Traceback" not in proc.stderr
    assert json.loads((w / "summary.json").read_text())["steps"] == 2 * 640 // 32


@pytest.mark.parametrize(
    "env, folder",
    [
        ({"XDG_CACHE_HOME": "/x/cache"}, "/x/cache/fashion_jax/xla"),
        ({"XDG_CACHE_HOME": "/x/cache", "JAX_COMPILATION_CACHE_DIR": "/mine"}, "/mine"),
        ({"JAX_COMPILATION_CACHE_DIR": ""}, None),
    ],
    ids=["default under XDG_CACHE_HOME", "JAX's variable wins", "empty: no cache"],
)
def test_the_commands_compilation_cache_follows_the_environment(monkeypatch, env, folder):
    """`programs.use_compilation_cache` (called by run and sweep): JAX's own variable when set,
    else a folder of the user's cache with a size cap; every program cached when there is one."""
    import jax

    from fashion_jax import programs

    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    updates = {}
    monkeypatch.setattr(jax.config, "update", lambda name, value: updates.update({name: value}))
    assert programs.use_compilation_cache() == folder
    if "JAX_COMPILATION_CACHE_DIR" not in env:  # Ours: set here, capped.
        assert updates["jax_compilation_cache_dir"] == folder
        assert updates["jax_compilation_cache_max_size"] == programs.CACHE_MAX_BYTES
    else:  # JAX reads its variable itself.
        assert "jax_compilation_cache_dir" not in updates
    assert updates.get("jax_persistent_cache_min_compile_time_secs") == (0.0 if folder else None)
