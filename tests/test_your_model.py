"""Your own model (Linen or NNX, from a file beside config.py, with model_kwargs) and your own data
(in-memory arrays, a tfds dataset by name), through the runner, predict and report."""

import json
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, last_step, run_here, run_module, runner_args, start
from fashion_jax import config as config_lib
from fashion_jax import nnx_models, steps
from fashion_jax.errors import DataError

TIMING = ("images_per_second", "epoch_seconds")


def nnx_config(**values):
    c = config_lib.load_experiment(ROOT / "experiments/nnx_cnn/config.py")
    for k, v in values.items():
        c[k] = v
    return c


# ----------------------------------------------------------------------------- NNX as pure steps


def test_nnx_state_is_plain_dicts_and_apply_is_pure():
    config = nnx_config(model_kwargs={"in_channels": 3, "widths": (8,), "dropout": 0.5})
    state = steps.create_train_state(
        jax.random.key(0), config, image_shape=(12, 12, 3), num_classes=5
    )
    assert isinstance(state.apply_fn, nnx_models.NNXApply)
    assert set(state.params) == {"convs", "head", "norms"}
    assert set(state.batch_stats["norms"]["0"]) == {"mean", "var"}
    # 3*3*3*8 conv + 8+8 BN + 8*5+5 head.
    assert sum(x.size for x in jax.tree.leaves(state.params)) == 216 + 16 + 45
    x = jax.random.uniform(jax.random.key(1), (4, 12, 12, 3))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    train = lambda key: state.apply_fn(
        variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
    )
    (a, stats_a), (b, _), (c, _) = (
        train(jax.random.key(2)),
        train(jax.random.key(2)),
        train(jax.random.key(3)),
    )
    np.testing.assert_array_equal(a, b)  # Same key, same dropout mask: no hidden RNG state.
    assert not np.allclose(a, c)  # Another key, another mask.
    assert not np.allclose(stats_a["batch_stats"]["norms"]["0"]["mean"], 0)  # Updated in train.
    e1, e2 = state.apply_fn(variables, x), state.apply_fn(variables, x, train=False)
    np.testing.assert_array_equal(e1, e2)  # Eval: deterministic, running statistics.
    assert e1.shape == (4, 5) and e1.dtype == jnp.float32
    # One jitted train step changes the parameters and the statistics, and is reproducible.
    batch = {"image": (x * 255).astype(jnp.uint8), "label": jnp.array([0, 1, 2, 3])}
    step = jax.jit(steps.train_step)
    s1, m1 = step(state, batch, jax.random.key(4))
    s2, m2 = step(state, batch, jax.random.key(4))
    assert float(m1["loss"]) == float(m2["loss"]) and np.isfinite(float(m1["loss"]))
    jax.tree.map(np.testing.assert_array_equal, s1.params, s2.params)
    assert not np.allclose(s1.params["head"]["kernel"], state.params["head"]["kernel"])


# ----------------------------------------------------------------------------- your own arrays


def _arrays(n, rng, shape=(32, 32, 3), classes=5, dtype=np.float32):
    """Images a CNN learns quickly: class k lights up channel-row band k."""
    labels = rng.integers(0, classes, n)
    images = rng.uniform(0, 0.2, (n, *shape)).astype(np.float32)
    for i, k in enumerate(labels):
        images[i, 5 * k : 5 * k + 4, :, k % shape[-1]] = 0.9
    if dtype == np.uint8:
        images = (images * 255).astype(np.uint8)
    return images, labels


def test_train_and_evaluate_on_in_memory_float_images_evaluates_every_test_image_once(tmp_path):
    from fashion_jax.train import train_and_evaluate

    rng = np.random.default_rng(0)
    n_test = 53  # Not a multiple of the eval batch: the last batch is padded and masked.
    data = {
        "train": _arrays(256, rng),
        "test": _arrays(n_test, rng),
        "class_names": ["a", "b", "c", "d", "e"],
    }
    c = config_lib.get_config()
    for k, v in dict(
        model="convnet_s",
        num_epochs=2,
        batch_size=32,
        log_every_steps=4,
        eval_batch_size=16,
        progress_bar=False,
        learning_rate=3e-3,
    ).items():
        c[k] = v
    summary = train_and_evaluate(c, tmp_path / "w", data=data)
    correct = summary["test_accuracy"] * n_test
    assert abs(correct - round(correct)) < 1e-6  # A count out of exactly 53 images.
    assert summary["test_accuracy"] >= 0.6, summary  # Chance is 0.2.
    assert summary["steps"] == 2 * (256 // 32)
    saved = json.loads((tmp_path / "w/config.json").read_text())
    assert saved["dataset"] == "memory"
    info = json.loads((tmp_path / "w/dataset.json").read_text())
    assert {k: info[k] for k in ("image_shape", "num_classes", "class_names")} == {
        "image_shape": [32, 32, 3],
        "num_classes": 5,
        "class_names": list("abcde"),
    }
    assert info["splits"]["test"]["images"] == f"float32[{n_test}, 32, 32, 3]"
    # The runner hands its in-memory test split to the report: figures with the data's classes.
    report_md = (tmp_path / "w/report.md").read_text()
    assert "| e " in report_md and "trained on in-memory arrays" not in report_md
    matrix = json.loads((tmp_path / "w/plots/confusion_matrix.json").read_text())
    assert len(matrix) == 5 and sum(map(sum, matrix)) == n_test
    # Rerun from the disk alone, the arrays are gone: the figures are skipped, with a note.
    from fashion_jax import report

    report.write_report(tmp_path / "w")
    assert "trained on in-memory arrays" in (tmp_path / "w/report.md").read_text()
    # predict on an image file: resized to 32x32 RGB, named by the data's own class names.
    from PIL import Image

    from fashion_jax import predict

    Image.fromarray((data["test"][0][0] * 255).astype(np.uint8)).save(tmp_path / "x.png")
    assert predict.main(["--workdir", str(tmp_path / "w"), str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "w/predictions/x.png").is_file()
    from fashion_jax import evaluate
    from fashion_jax import trained as trained_lib

    _, state = trained_lib.load_trained(tmp_path / "w")
    logits = evaluate.all_logits(state, data["test"][0], batch_size=16)
    assert logits.shape == (n_test, 5)
    accuracy = (logits.argmax(-1) == data["test"][1]).mean()
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-9)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d.update(train=(d["train"][0], d["train"][1][:-1])), "64 images but 63 labels"),
        (lambda d: d["test"][1].__setitem__(0, 7), "labels must be in 0..4"),
        (lambda d: d.update(test=(d["test"][0][..., 0], d["test"][1])), "add a channel axis"),
        (lambda d: d.update(test=(d["test"][0][:, :16], d["test"][1])), "differ in shape"),
        (lambda d: d.pop("test"), '"train" and "test"'),
    ],
)
def test_bad_in_memory_data_is_refused_before_anything_is_written(tmp_path, mutate, fragment):
    from fashion_jax.train import train_and_evaluate

    rng = np.random.default_rng(0)
    data = {"train": _arrays(64, rng), "test": _arrays(16, rng), "class_names": list("abcde")}
    mutate(data)
    with pytest.raises(DataError, match=fragment.replace("(", r"\(")):
        train_and_evaluate(config_lib.get_config(), tmp_path / "w", data=data)
    assert not (tmp_path / "w").exists()


def test_a_tfds_dataset_by_name_gives_its_shape_and_classes(tmp_path):
    import tensorflow_datasets as tfds

    from fashion_jax import data

    c = config_lib.get_config()
    c.dataset, c.data_dir = "mnist", str(tmp_path)
    info = data.describe(c)
    assert info.image_shape == (28, 28, 1) and info.num_classes == 10
    c.dataset = "cifar10"
    info = data.describe(c)
    # cifar10's class names are read from its download; before that tfds numbers them.
    assert info.image_shape == (32, 32, 3) and len(info.class_names) == info.num_classes == 10
    with tfds.testing.mock_data(num_examples=48):
        splits, info = data.load_data(c)
    assert splits["train"].images.shape == (48, 32, 32, 3)
    assert splits["train"].images.dtype == np.uint8 and splits["test"].labels.dtype == np.int32
    assert splits["train"].labels.max() < 10


# ----------------------------------------------------------------------------- through the CLIs


@pytest.fixture(scope="module")
def args(tiny_idx, tiny_tfds):
    return runner_args(tiny_idx, tiny_tfds)


def _experiment(tmp_path, name, **model_kwargs):
    """A copy of experiments/NAME (config.py + net.py) in a scratch folder, with model_kwargs."""
    folder = tmp_path / name
    shutil.copytree(ROOT / "experiments" / name, folder)
    kwargs = json.dumps(model_kwargs)
    return folder, [f"--config.model_kwargs={kwargs}"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, model_kwargs",
    [
        ("linen_cnn", {"width": 8, "dropout": 0.1}),
        ("nnx_cnn", {"in_channels": 1, "widths": [8, 16], "dropout": 0.1}),
    ],
)
def test_own_model_trains_then_predict_and_report_work_in_new_processes(
    tmp_path, args, name, model_kwargs
):
    workdir, extra = _experiment(tmp_path, name, **model_kwargs)
    run_here("fashion_jax.run", "--workdir", workdir, *args, *extra, check=True)
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"] == "net:CNN" and saved["model_kwargs"] == model_kwargs
    assert saved["model_dir"] == str(workdir.absolute())
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["params"] > 0 and summary["test_accuracy"] is not None
    assert summary["steps"] == 40
    proc = run_module("fashion_jax.predict", "--workdir", workdir, "--index", "0", check=True)
    assert "test image 0: predicted " in proc.stdout, proc.stdout
    proc = run_module("fashion_jax.report", "--workdir", workdir, check=True)
    report = (workdir / "report.md").read_text()
    assert "net:CNN" in report and "Ankle boot" in report
    # A moved experiment still finds its net.py (the workdir is searched after model_dir).
    moved = tmp_path / "moved"
    shutil.move(workdir, moved)
    proc = run_module("fashion_jax.predict", "--workdir", moved, "--index", "0", check=True)
    assert "test image 0" in proc.stdout


def _records(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


@pytest.mark.slow
def test_killed_nnx_run_resumes_bit_for_bit(tmp_path, args):
    """BatchNorm, dropout and EMA in an NNX model: kill -9 mid-epoch, resume, compare with an
    uninterrupted run, parameters, statistics and EMA bit for bit, metrics record for record."""
    from fashion_jax.trained import load_trained

    run_args = [*args, "--config.num_epochs=3"]
    reference, _ = _experiment(tmp_path / "ref", "nnx_cnn", widths=[8, 16], dropout=0.3)
    _, extra = _experiment(tmp_path / "kill", "nnx_cnn", widths=[8, 16], dropout=0.3)
    killed = tmp_path / "kill" / "nnx_cnn"
    run_here("fashion_jax.run", "--workdir", reference, *run_args, *extra, check=True)
    proc = start(killed, [*run_args, *extra])
    deadline = time.time() + 300
    while last_step(killed) < 25 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert last_step(killed) < 60  # Killed before the end.
    proc = start(killed, [*run_args, *extra])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Resuming from the checkpoint" in out
    (_, a), (_, b) = load_trained(killed), load_trained(reference)
    assert int(a.step) == int(b.step) == 60
    tree = lambda s: jax.tree.map(np.asarray, (s.params, s.batch_stats, s.ema, s.opt_state))
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y, strict=True), tree(a), tree(b))
    assert _records(killed) == _records(reference)


def test_nnx_model_kwargs_are_checked_against_its_constructor():
    from fashion_jax import models
    from fashion_jax.errors import ConfigError

    dirs = (str(ROOT / "experiments/nnx_cnn"),)
    with pytest.raises(ConfigError, match="does not accept .*'widht'"):
        models.build(nnx_config(model_kwargs={"widht": 3}), 10, dirs)
    kind, model = models.build(nnx_config(model_kwargs={"widths": [4]}), 7, dirs)
    assert kind == "nnx" and model.head.out_features == 7 and model.convs[0].out_features == 4


@pytest.mark.slow
def test_nnx_model_trains_data_parallel_over_two_devices(tmp_path, args):
    workdir, extra = _experiment(tmp_path, "nnx_cnn", widths=[8, 16], dropout=0.1)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    run_module("fashion_jax.run", "--workdir", workdir, *args, *extra, env=env, check=True)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["devices"] == 2 and summary["steps"] == 40
    assert np.isfinite(summary["test_loss"])
    # Read back on one device: the checkpoint is not tied to the mesh it was written on.
    proc = run_here("fashion_jax.predict", "--workdir", workdir, "--index", "0", check=True)
    assert "test image 0: predicted " in proc.stdout


@pytest.mark.slow
def test_sweep_of_an_nnx_experiment_does_not_retrain_finished_seeds(tmp_path, args):
    workdir, _ = _experiment(tmp_path, "nnx_cnn")
    extra = []  # The experiment's own model_kwargs, with a tuple (config.json holds a list).
    sweep = (
        "fashion_jax.sweep",
        "--workdir",
        workdir,
        "--seeds",
        "0",
        *args,
        "--config.num_epochs=1",
    )
    first = run_here(*sweep, *extra, check=True)
    assert "Training net:CNN" in first.stdout
    again = run_here(*sweep, *extra, check=True)
    assert "Training" not in again.stdout, again.stdout  # Tuples in model_kwargs match config.json.
    rows = json.loads((workdir / "sweep.json").read_text())["seeds"]
    assert [r["seed"] for r in rows] == [0] and rows[0]["test_accuracy"] is not None
