"""docs/tutorial.ipynb runs from top to bottom (one short epoch on a subset) and prints sane results.

The notebook is executed with nbclient on a copy whose `parameters` cell is replaced, in a kernel
started with this interpreter (`sys.executable`), so it needs no installed Jupyter kernelspec.
The committed notebook in docs/ is never rewritten.
"""

from __future__ import annotations

import json
import os
import re
import sys

import nbclient
import nbformat
import pytest

from conftest import ROOT, requires_real_data
from fashion_jax.data import CLASS_NAMES

NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"

# One epoch of 47 steps; 1,500 test images, so evaluation pads and masks its last batch of 1,000.
SHORT = {
    "EPOCHS": 1,
    "BATCH_SIZE": 64,
    "MAX_TRAIN": 3008,
    "MAX_TEST": 1500,
    "TIMING_STEPS": 0,
    "RUNNER_MAX_TRAIN": 640,
}
KERNEL_NAME = "fashion-jax-test-python"


def parameters_cell(nb):
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one code cell tagged `parameters`"
    return tagged[0]


def kernel_manager(kernel_dir):
    """A KernelManager whose only kernel runs `sys.executable -m ipykernel_launcher`."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = kernel_dir / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python (tests)",
                "language": "python",
            }
        )
    )
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def outputs_text(cell) -> str:
    return "".join(
        o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
    )


def test_parameters_cell_sets_every_short_setting():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    source = parameters_cell(nb).source
    for name in SHORT:
        assert re.search(rf"^{name}\s*=", source, re.M), (
            f"parameter {name} is missing from the parameters cell"
        )
    assert re.search(r"^EPOCHS\s*=\s*10\b", source, re.M), (
        "the committed notebook runs the tutorial's 10 epochs"
    )


@pytest.mark.slow
@requires_real_data
def test_notebook_runs_a_short_epoch(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters_cell(nb).source = "\n".join(f"{k} = {v!r}" for k, v in SHORT.items())
    km = kernel_manager(tmp_path / "kernels")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    client = nbclient.NotebookClient(
        nb, km=km, timeout=300, record_timing=False, resources={"metadata": {"path": str(tmp_path)}}
    )
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail("a notebook cell failed:\n" + re.sub(r"\x1b\[[0-9;]*m", "", str(e)))
    finally:
        nbformat.write(
            nb, tmp_path / "executed.ipynb"
        )  # Left in tmp_path for a look after a failure.

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = "\n".join(outputs_text(c) for c in code)

    assert "train images (60000, 28, 28, 1) uint8 labels (60000,) int32" in text, text
    assert "test images (10000, 28, 28, 1) uint8 labels (10000,) int32" in text, text
    assert "using the first 3008 training and 1500 test images" in text, text
    assert "total parameters: 140,682" in text, text
    assert "same parameter tree and shapes: True" in text, text
    difference = float(
        re.search(r"largest logit difference on 256 test images: (\S+)", text).group(1)
    )
    assert difference < 1e-4, text
    assert "same parameters as create_train_state: True" in text, text
    assert "epoch 1/1: 47 steps" in text, text

    accuracy = float(
        re.search(r"1500 test images: test loss \S+, test accuracy (\S+)", text).group(1)
    )
    assert 0.3 < accuracy <= 1.0, f"test accuracy {accuracy} is not above chance (0.1)"

    prediction = re.search(r"test image 0: predicted (.+) \(\S+%\), true (.+)", text)
    assert (
        prediction and prediction.group(1) in CLASS_NAMES and prediction.group(2) == "Ankle boot"
    ), text

    runner = re.search(
        r"checkpoint at step (\d+) of seed_cnn; its test accuracy (\S+); test image 0: (.+)", text
    )
    assert runner, text
    assert int(runner.group(1)) == SHORT["RUNNER_MAX_TRAIN"] // 64
    assert float(runner.group(2)) > 0.1 and runner.group(3).strip() in CLASS_NAMES, text

    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 3, (
        "three figures: sample images, curves, test image 0 with its probabilities"
    )
