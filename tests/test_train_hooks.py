"""train_and_evaluate's hooks: `stop_when` ends a run at a log step or an epoch end as if finished,
`report=False` writes no report; the metric writer without tensorboardX; data without tfds."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import conftest
from fashion_jax import config as config_lib
from fashion_jax import data, metrics, train, workdir


def tiny_config(tiny_idx, tiny_tfds, **overrides):
    """conftest's tiny run, 3 epochs, checkpoints at epoch ends only."""
    return conftest.tiny_config(
        tiny_idx, tiny_tfds, **{"num_epochs": 3, "checkpoint_every_steps": 0, **overrides}
    )


def test_stop_when_ends_the_run_mid_epoch_with_a_checkpoint_and_a_summary(
    tmp_path, tiny_idx, tiny_tfds
):
    seen = []

    def after_25_steps(record):
        seen.append((record["type"], record["step"]))
        return record["step"] >= 25

    w = tmp_path / "w"
    summary = train.train_and_evaluate(
        tiny_config(tiny_idx, tiny_tfds), w, stop_when=after_25_steps, report=False
    )
    # 20 steps per epoch, log every 5: asked at steps 5, 10, 15 (train), 20 (eval), then 25: stop.
    assert seen == [("train", s) for s in (5, 10, 15)] + [("eval", 20), ("train", 25)]
    assert summary["steps"] == 25 and summary["epochs"] == 1.25
    assert summary["test_accuracy"] == metrics.read(w)[-2]["test_accuracy"]  # epoch 1's eval
    assert [r["step"] for r in metrics.read(w)][-1] == 25
    assert json.loads((w / workdir.SUMMARY).read_text())["steps"] == 25
    assert not (w / workdir.REPORT).exists()
    # The checkpoint at 25 resumes: the next call trains the remaining 35 steps.
    more = train.train_and_evaluate(tiny_config(tiny_idx, tiny_tfds), w, report=False)
    assert more["steps"] == 60 and more["epochs"] == 3


def test_stop_when_at_an_epoch_end_skips_the_remaining_epochs(tmp_path, tiny_idx, tiny_tfds):
    w = tmp_path / "w"
    summary = train.train_and_evaluate(
        tiny_config(tiny_idx, tiny_tfds),
        w,
        stop_when=lambda r: r["type"] == "eval" and r["epoch"] >= 2,
    )
    assert summary["steps"] == 40 and summary["epochs"] == 2
    assert [r["epoch"] for r in metrics.read(w) if r["type"] == "eval"] == [1, 2]
    assert (w / workdir.REPORT).is_file()


def test_without_tensorboardx_the_writer_falls_back_or_says_it_skips(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    has_tensorboard = True
    try:
        import tensorboard.summary.writer.event_file_writer  # noqa: F401
    except ImportError:
        has_tensorboard = False
    writer = metrics.Writer(tmp_path, enabled=True)
    writer.start(0, config_lib.get_config())
    writer.write({"type": "train", "step": 5, "loss": 1.5})
    writer.finish(config_lib.get_config(), {"test_accuracy": 0.5})
    assert metrics.read(tmp_path) == [{"type": "train", "step": 5, "loss": 1.5}]
    events = list((tmp_path / workdir.TENSORBOARD).glob("events.out.tfevents.*"))
    err = capsys.readouterr().err
    if has_tensorboard:
        assert len(events) == 1 and events[0].stat().st_size > 100 and not err
    else:
        assert events == [] and err.count("\n") == 1 and "not written" in err


def test_without_tfds_the_idx_files_are_read_directly(tmp_path, tiny_idx, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    splits = data.load(str(tmp_path / "empty"), str(tiny_idx), download=False)
    direct = data.read_idx(tiny_idx, "test")
    assert {k: len(s.labels) for k, s in splits.items()} == {"train": 640, "test": 200}
    np.testing.assert_array_equal(splits["test"].images, direct.images)
    with pytest.raises(data.DataError, match="not installed"):
        data.load(str(tmp_path / "empty"), str(tmp_path / "no_idx"), download=False)
