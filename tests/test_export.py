"""fashion_jax.export: every format of a tiny trained run, checked against predict's logits."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, fingerprint, runner_args

pytest.importorskip(
    "jax2onnx", reason='the export extra is not installed: pip install -e ".[export]"'
)
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory, tiny_idx, tiny_tfds):
    """A finished two-epoch tiny seed_cnn run."""
    from fashion_jax import run

    w = tmp_path_factory.mktemp("export-seed") / "w"
    assert run.main(["--workdir", str(w), *runner_args(tiny_idx, tiny_tfds)]) == 0
    return w


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory, tiny_idx, tiny_tfds):
    """A tiny convnet_s run (batch norm) with an EMA of the weights, flip and shift TTA."""
    from fashion_jax import run

    w = tmp_path_factory.mktemp("export-bn") / "w"
    args = runner_args(
        tiny_idx,
        tiny_tfds,
        model="convnet_s",
        ema_decay=0.9,
        tta_flip="true",
        tta_shift=1,
        num_epochs=2,
    )
    assert run.main(["--workdir", str(w), *args]) == 0
    return w


@pytest.fixture(scope="module")
def nnx_run(tmp_path_factory, tiny_idx, tiny_tfds):
    """A tiny run of experiments/nnx_cnn's NNX model (batch norm, dropout, EMA) from its net.py."""
    import json
    import shutil

    from fashion_jax import run

    w = tmp_path_factory.mktemp("export-nnx") / "nnx_cnn"
    shutil.copytree(ROOT / "experiments" / "nnx_cnn", w)
    kwargs = json.dumps({"in_channels": 1, "widths": [8, 16], "dropout": 0.1})
    args = runner_args(tiny_idx, tiny_tfds, model_kwargs=kwargs, num_epochs=2)
    assert run.main(["--workdir", str(w), *args]) == 0
    return w


def reported_accuracy(stdout: str, name: str) -> float:
    match = re.search(rf"^{name}: test accuracy (\d\.\d+) \((\d+)/(\d+)\)", stdout, re.M)
    assert match, stdout
    return int(match.group(2)) / int(match.group(3))


def test_seed_cnn_exports_every_format_and_each_reproduces_predict(seed_run, tmp_path, capsys):
    import jax
    import onnxruntime as ort
    import tensorflow as tf

    from fashion_jax import export, load_trained, steps

    out = tmp_path / "out"
    assert export.main(["--workdir", str(seed_run), "--output", str(out)]) == 0
    stdout = capsys.readouterr().out
    run_accuracy = reported_accuracy(stdout, "predict")
    assert run_accuracy > 0.5  # The tiny data is learnable; an untrained net scores ~0.1.
    for fmt in export.FORMATS:
        assert reported_accuracy(stdout, fmt) == run_accuracy, stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(export.FILES.values())

    # Each file, loaded here by its own runtime, on a batch size not seen at export.
    config, state = load_trained(seed_run)
    images, _ = export.load_test_split(config)
    x = images[:37]
    want = np.asarray(steps.predict_logits(state, x))
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["N", 28, 28, 1]
    got = {
        "onnx": session.run(["logits"], {"image": x})[0],
        "saved_model": tf.saved_model.load(str(out / "saved_model"))
        .signatures["serving_default"](image=tf.constant(x))["logits"]
        .numpy(),
        "stablehlo": np.asarray(
            jax.export.deserialize(bytearray((out / "model.stablehlo").read_bytes())).call(x)
        ),
    }
    for fmt, logits in got.items():
        assert logits.shape == (37, 10), fmt
        np.testing.assert_allclose(logits, want, atol=export.TOLERANCE, err_msg=fmt)
    # SavedModel carries the readable formulation (nn.Conv, nn.max_pool), the others the trained.
    assert re.search(r"^saved_model: .*; readable formulation$", stdout, re.M), stdout
    assert re.search(r"^onnx: .*; trained formulation$", stdout, re.M), stdout


def test_the_saved_model_converts_to_tflite_as_the_docs_say(seed_run, tmp_path):
    """docs/export.md's way on to TFLite works on the exported SavedModel, dynamic batch included."""
    import tensorflow as tf

    from fashion_jax import export, load_trained, steps

    config, state = load_trained(seed_run)
    images, _ = export.load_test_split(config)
    export.export_state(state, ["saved_model"], tmp_path, images[:50])
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved_model"))
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    x = images[:5]
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, steps.predict_logits(state, x), atol=export.TOLERANCE)


def test_batch_norm_ema_and_flip_are_in_every_export(bn_run, tmp_path, capsys):
    """convnet_s with an EMA, flip and shift TTA: each format reproduces predict, which differs
    from the live weights, from no flip and from no shifts by more than the tolerance (so the check
    could tell)."""
    from fashion_jax import export, load_trained, steps

    config, state = load_trained(bn_run)
    assert config.tta_flip and config.tta_shift == 1 and state.ema is not None and state.batch_stats
    images, labels = export.load_test_split(config)
    live = state.replace(ema=None)
    assert (
        np.abs(
            steps.predict_logits(live, images, True) - steps.predict_logits(state, images, True)
        ).max()
        > 10 * export.TOLERANCE
    )
    assert (
        np.abs(
            steps.predict_logits(state, images) - steps.predict_logits(state, images, True)
        ).max()
        > 10 * export.TOLERANCE
    )
    out = tmp_path / "out"
    assert export.main(["--workdir", str(bn_run), "--output", str(out)]) == 0
    stdout = capsys.readouterr().out
    for fmt in export.FORMATS:
        assert reported_accuracy(stdout, fmt) == reported_accuracy(stdout, "predict"), stdout
    # Without the flip, or without the shifts, the exported model would fail its check.
    for flip, shift in ((False, 1), (True, 0)):
        with pytest.raises(export.ExportRefused):
            export.compare(
                export.reference_logits(state, images, {"tta_flip": flip, "tta_shift": shift}),
                export.reference_logits(state, images, steps.eval_options(config)),
            )


@pytest.mark.parametrize("name", ["seed_cnn", "fast_cnn", "convnet_s", "convnet_l"])
def test_the_readable_formulation_has_the_same_parameters_and_logits(name):
    import jax
    import jax.numpy as jnp

    from fashion_jax import export, models

    model = models.get_model(name)
    x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    if "batch_stats" in variables:  # Statistics away from their initial (0, 1).
        _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        variables = {**variables, **updates}
    readable = export.readable_apply_fn(model.apply)
    assert readable is not None and readable.__self__.formulation == "plain"
    assert model.formulation == "fast"
    plain_vars = readable.__self__.init(jax.random.key(0), x)
    assert jax.tree.structure(plain_vars) == jax.tree.structure(variables)
    assert jax.tree.map(jnp.shape, plain_vars) == jax.tree.map(jnp.shape, variables)
    want = model.apply(variables, x, train=False)
    np.testing.assert_allclose(readable(variables, x, train=False), want, atol=1e-5)


def test_a_model_with_no_readable_counterpart_is_exported_as_trained():
    from fashion_jax import export, models

    assert export.readable_apply_fn(models.get_model("resnet_small").apply) is None
    assert export.readable_apply_fn(lambda variables, x: x) is None


def test_compare_allows_a_class_change_only_at_a_near_tie():
    from fashion_jax import export

    reference = np.array([[1.0, 0.9996, 0.0], [2.0, 0.0, 0.0]], np.float32)
    near = reference + np.array([[-3e-4, 3e-4, 0], [0, 0, 0]], np.float32)
    assert export.compare(near, reference) == pytest.approx((3e-4, 1), rel=1e-3)
    with pytest.raises(export.ExportRefused, match="differ from predict's by"):
        export.compare(reference + 2e-3, reference)
    with pytest.raises(export.ExportRefused):
        export.compare(np.full_like(reference, np.nan), reference)


def test_a_model_every_exporter_refuses_is_one_error_and_writes_nothing(
    seed_run, tmp_path, capsys, monkeypatch
):
    """A model whose inference calls back into Python (jax.pure_callback) exports nowhere."""
    import jax

    from fashion_jax import export, load_trained

    config, state = load_trained(seed_run)
    apply_fn = state.apply_fn

    def opaque(variables, x, **kwargs):
        y = apply_fn(variables, x, **kwargs)
        return jax.pure_callback(np.asarray, jax.ShapeDtypeStruct(y.shape, y.dtype), y)

    monkeypatch.setattr(export, "load_trained", lambda w: (config, state.replace(apply_fn=opaque)))
    before = fingerprint(seed_run)
    for fmt in export.FORMATS:
        status = export.main(["--workdir", str(seed_run), "--format", fmt])
        err = capsys.readouterr().err
        assert status == 2 and err.startswith(f"error: the {fmt} exporter refuses this model"), err
        assert err.count("error:") == 1 and "Traceback" not in err, err
    assert fingerprint(seed_run) == before and not (seed_run / "export").exists()


def test_without_the_extra_the_command_names_it(seed_run, capsys, monkeypatch):
    from fashion_jax import export

    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # `import jax2onnx` raises ImportError.
    assert export.main(["--workdir", str(seed_run), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[export]"' in err, err


def test_the_docs_onnx_snippet_classifies_with_onnxruntime_alone(seed_run, tmp_path):
    """The Python block of docs/export.md, run in a fresh interpreter in the export's folder:
    it must not import jax or fashion_jax, and it prints the class of test image 0."""
    from fashion_jax import data, export, load_trained

    config, state = load_trained(seed_run)
    images, _ = export.load_test_split(config)
    export.export_state(state, ["onnx"], tmp_path, images[:20])
    text = (ROOT / "docs" / "export.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    snippet = next(b for b in blocks if "onnxruntime" in b)
    # The snippet reads the IDX test file from Debian's folder; here, the tiny one.
    snippet = snippet.replace("/usr/share/datasets/fashion-mnist", str(config.idx_dir))
    guard = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('jax', 'jaxlib', 'fashion_jax', 'flax', 'tensorflow'):\n"
        "            raise ImportError('the snippet imports ' + name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", guard + snippet],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    logits = np.asarray(export.reference_logits(state, images[:1], {}))
    name = data.CLASS_NAMES[int(logits.argmax())]
    assert proc.stdout.startswith(f"test image 0: {name} ("), proc.stdout


def test_an_nnx_model_exports_every_format_and_each_reproduces_predict(nnx_run, tmp_path, capsys):
    """An NNX module (a user's net.py) goes through every exporter as trained (EMA, eval mode)."""
    import onnxruntime as ort

    from fashion_jax import export, load_trained, nnx_models, steps

    config, state = load_trained(nnx_run)
    assert isinstance(state.apply_fn, nnx_models.NNXApply)
    out = tmp_path / "out"
    assert export.main(["--workdir", str(nnx_run), "--output", str(out)]) == 0
    stdout = capsys.readouterr().out
    run_accuracy = reported_accuracy(stdout, "predict")
    for fmt in export.FORMATS:
        assert reported_accuracy(stdout, fmt) == run_accuracy, stdout
    images, _ = export.load_test_split(config)
    x = images[:9]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        session.run(["logits"], {"image": x})[0],
        np.asarray(steps.predict_logits(state, x)),
        atol=export.TOLERANCE,
    )
