"""One epoch of the default recipe on the real Fashion-MNIST (when installed), report and predict."""

import json

import numpy as np
import pytest

from conftest import requires_real_data, run_module

pytestmark = [pytest.mark.slow, requires_real_data]


def test_one_epoch_of_the_tutorial_recipe_on_real_data(tmp_path):
    workdir = tmp_path / "base"
    run_module(
        "fashion_jax.run",
        "--workdir",
        workdir,
        "--config",
        "experiments/base/config.py",
        "--config.num_epochs=1",
        "--config.download=false",
        check=True,
    )
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 60000 // 64
    assert (
        summary["test_accuracy"] >= 0.85
    )  # Keras' tutorial model is at about 0.87 after one epoch.
    matrix = np.array(json.loads((workdir / "plots" / "confusion_matrix.json").read_text()))
    assert matrix.shape == (10, 10) and matrix.sum() == 10000
    assert matrix.sum(axis=1).tolist() == [1000] * 10
    assert np.trace(matrix) / 10000 == pytest.approx(summary["test_accuracy"], abs=1e-4)
    pred = run_module("fashion_jax.predict", "--workdir", workdir, "--index", "0", check=True)
    assert "true Ankle boot" in pred.stdout
