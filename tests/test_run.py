"""End-to-end runs of `python -m fashion_jax.run` and `fashion_jax.predict` on tiny generated data."""

import json

import pytest

from conftest import assert_clean_error, run_module


@pytest.mark.slow
def test_runner_trains_and_writes_its_files(tmp_path, tiny_args):
    workdir = tmp_path / "w"
    proc = run_module("fashion_jax.run", "--workdir", workdir, *tiny_args, check=True)
    assert "test accuracy" in proc.stdout
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


def test_unknown_key_and_bad_values_exit_cleanly(tmp_path):
    w = tmp_path / "w"
    assert_clean_error(
        run_module("fashion_jax.run", "--workdir", w, "--config.batchsize=8"),
        "Unknown config key 'batchsize'",
        "batch_size",
    )
    assert_clean_error(
        run_module("fashion_jax.run", "--workdir", w, "--config.batch_size=0"),
        "batch_size = 0 is out of range",
    )
    assert_clean_error(
        run_module("fashion_jax.run", "--workdir", w, "--config.learning_rate=-1"),
        "learning_rate = -1.0 is out of range",
    )
    assert not w.exists()  # Nothing was written for a refused config.


def test_unwritable_workdir_exits_cleanly(tmp_path, tiny_args):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert_clean_error(
        run_module("fashion_jax.run", "--workdir", blocker / "w", *tiny_args),
        "Cannot write to --workdir",
    )
    assert_clean_error(run_module("fashion_jax.run", "--workdir", blocker, *tiny_args), "is a file")


def test_missing_or_corrupt_data_exits_cleanly(tmp_path, tiny_idx):
    args = ["--config.download=false", f"--config.data_dir={tmp_path / 'tfds'}"]
    proc = run_module(
        "fashion_jax.run",
        "--workdir",
        tmp_path / "w1",
        *args,
        f"--config.idx_dir={tmp_path / 'missing'}",
    )
    assert_clean_error(
        proc, "does not hold all four files", "apt-get install dataset-fashion-mnist"
    )
    bad = tmp_path / "bad_idx"
    bad.mkdir()
    for f in tiny_idx.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    proc = run_module(
        "fashion_jax.run", "--workdir", tmp_path / "w2", *args, f"--config.idx_dir={bad}"
    )
    assert_clean_error(proc, "train-labels-idx1-ubyte.gz", "corrupt or truncated")


def test_foreign_workdir_is_refused(tmp_path, tiny_args):
    w = tmp_path / "w"
    (w / "checkpoints").mkdir(parents=True)
    (w / "checkpoints" / "theirs.bin").write_bytes(b"x")
    assert_clean_error(
        run_module("fashion_jax.run", "--workdir", w, *tiny_args), "no config.json", "--restart"
    )
    (w / "config.json").write_text("[1, 2, 3]")
    assert_clean_error(
        run_module("fashion_jax.run", "--workdir", w, *tiny_args), "not a fashion_jax config"
    )
    assert (w / "checkpoints" / "theirs.bin").read_bytes() == b"x"  # Untouched.
