"""benchmarks/offline_bundle.py and its run.sh, on a machine like an offline GPU one: a fresh
virtual environment that holds only a preinstalled JAX stack (no TensorFlow, tfds, ml_collections
or tensorboardX), no package index, and the bundle."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from conftest import ROOT

# What the offline GPU machine has installed (of it, what this machine has: tensorboard, onnx and
# onnxruntime are not installed here), and what it must do without.
PREINSTALLED = [
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "tensorstore",
    "numpy",
    "matplotlib",
    "pillow",
    "tqdm",
]
ABSENT = {"tensorflow", "tensorflow-cpu", "tensorflow-datasets", "ml-collections", "tensorboardx"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str]) -> dict[str, md.Distribution]:
    """The installed distributions `names` need (requirements with their markers and extras)."""
    out: dict[str, md.Distribution] = {}
    todo = [(n, frozenset()) for n in names]
    while todo:
        name, extras = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # An optional dependency this machine does not have.
        key = norm(dist.metadata["Name"])
        if key in out and not extras:
            continue
        out[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{**default_environment(), "extra": e} for e in ("", *extras)]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    return out


def site_with_only(dists: dict[str, md.Distribution], folder: Path) -> Path:
    """A folder of symlinks to exactly these distributions' top-level modules and metadata."""
    folder.mkdir()
    for dist in dists.values():
        for top in {Path(f).parts[0] for f in dist.files or []}:
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            src = Path(dist.locate_file(top))
            if src.exists() and not (folder / top).exists():
                (folder / top).symlink_to(src)
    return folder


@pytest.mark.slow
def test_run_sh_measures_in_a_venv_without_tensorflow_tfds_or_ml_collections(
    tmp_path, tiny_idx, tiny_tfds
):
    bundle = tmp_path / "bundle"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "offline_bundle.py"), str(bundle)]
        + ["--data-dir", str(tiny_tfds), "--idx-dir", str(tiny_idx)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    if proc.returncode != 0 and re.search(r"connection|resolve|network", proc.stderr, re.I):
        pytest.skip(f"no package index to fetch the wheels: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [w.split("-")[0] for w in manifest["wheels"]] == ["absl_py", "ml_collections"]
    assert all(w.endswith("-py3-none-any.whl") for w in manifest["wheels"])

    # The machine: a fresh venv (pip from ensurepip, no index) seeing only the preinstalled stack.
    stack = closure(PREINSTALLED)
    assert {"jax", "jaxlib", "flax", "orbax-checkpoint", "absl-py"} <= set(stack)
    assert not ABSENT & set(stack), ABSENT & set(stack)
    site = site_with_only(stack, tmp_path / "preinstalled")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "preinstalled.pth").write_text(f"{site}\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_INDEX_URL")
    }
    env.update(PYTHON=str(python), PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, HOME=str(tmp_path))
    check = subprocess.run(
        [
            python,
            "-c",
            "import jax, flax, orbax.checkpoint\n"
            "for m in ('tensorflow', 'tensorflow_datasets', 'ml_collections', 'tensorboardX'):\n"
            "    try:\n        __import__(m)\n    except ImportError:\n        pass\n"
            "    else:\n        raise SystemExit(m + ' is importable')",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert check.returncode == 0, check.stderr

    results = tmp_path / "results"
    run = subprocess.run(
        ["bash", str(bundle / "run.sh"), str(results), "--smoke", "--fail-sections=overhead"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-4000:]  # The kit's: a section failed (on request).
    install = (results / "install.log").read_text()
    assert "installing: ml_collections-1.1.0-py3-none-any.whl\n" in install  # absl-py is there
    entry = json.loads((results / "accelerator.jsonl").read_text().splitlines()[-1])
    assert entry["complete"] and entry["smoke"]
    assert {k: v["status"] for k, v in entry["sections"].items()} == {
        "peak": "ok",
        "overhead": "failed",
        "throughput": "ok",
        "time_to_accuracy": "ok",
        "population": "ok",
    }
    assert all(r["images_per_s"] > 0 for r in entry["throughput"])
    assert all(r["together_img_s"] > 0 for r in entry["population"])
    (tta,) = entry["time_to_accuracy"]
    assert tta["epochs_run"] == 1 and tta["best_test_accuracy"] > 0, tta
    summary = json.loads((results / "train_check" / "summary.json").read_text())
    assert summary["steps"] == 640 // 64 and 0 <= summary["test_accuracy"] <= 1
    assert "tensorflow-datasets" not in summary["versions"]
    assert "TensorBoard events are not written" in (results / "train_check.log").read_text()
    assert "kit exit 1, training check exit 0" in run.stdout


@pytest.mark.parametrize("keep", ["", "1"])
def test_the_import_says_which_xla_flag_it_added(keep):
    env = {
        k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "FASHION_JAX_KEEP_XLA_FLAGS")
    }
    env.update(PYTHONPATH=str(ROOT), **({"FASHION_JAX_KEEP_XLA_FLAGS": keep} if keep else {}))
    code = "import os, fashion_jax; print(repr(fashion_jax.XLA_FLAGS_ADDED), repr(os.environ.get('XLA_FLAGS')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    import fashion_jax

    measured = md.version("jaxlib").startswith("0.10.") and not keep
    flag = fashion_jax.XLA_CPU_FLAG
    assert out == ([repr(flag), repr(flag)] if measured else ["''", "None"])
