"""Reports and plots (`fashion_jax.report`) and `fashion_jax.predict` on image files, after one tiny run."""

from __future__ import annotations

import json
import re
import shutil
import struct

import numpy as np
import pytest

from conftest import assert_clean_error, run_module, runner_args

PNGS = ("curves.png", "confusion_matrix.png", "per_class_accuracy.png", "samples.png")
TEST_N = 200  # conftest.write_idx's default test split.


def png_size(path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", raw[16:24])


@pytest.fixture(scope="module")
def module_args(tiny_idx, tiny_tfds):
    return runner_args(tiny_idx, tiny_tfds)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, module_args):
    """A finished 2-epoch run on the tiny dataset (the runner writes the report at its end)."""
    workdir = tmp_path_factory.mktemp("report") / "finished"
    run_module("fashion_jax.run", "--workdir", workdir, *module_args, check=True)
    return workdir


@pytest.fixture(scope="module")
def crashed(trained):
    """A copy of `trained` made to look killed in epoch 2: no summary.json, no report, metrics up to
    epoch 1 followed by a half-written line."""
    workdir = trained.parent / "crashed"
    shutil.copytree(trained, workdir)
    (workdir / "summary.json").unlink()
    shutil.rmtree(workdir / "plots")
    (workdir / "report.md").unlink()
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= 20]
    (workdir / "metrics.jsonl").write_text("\n".join(kept) + '\n{"type": "train", "step": 25, "lo')
    return workdir


def test_tiny_dataset_is_the_expected_one(tiny_idx):
    from fashion_jax import data

    assert len(data.read_idx(tiny_idx, "test").labels) == TEST_N


@pytest.mark.slow
def test_run_writes_the_report(trained, tiny_idx):
    from fashion_jax import data

    plots = trained / "plots"
    for name in PNGS:
        width, height = png_size(plots / name)
        assert width >= 400 and height >= 300, (name, width, height)
        assert (plots / name).stat().st_size > 10_000, name
    matrix = np.array(json.loads((plots / "confusion_matrix.json").read_text()))
    labels = data.read_idx(tiny_idx, "test").labels
    assert matrix.shape == (10, 10) and matrix.sum() == TEST_N
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(labels, minlength=10))
    # Same predictions as the runner's last evaluation (up to one near-tie).
    summary = json.loads((trained / "summary.json").read_text())
    assert abs(np.trace(matrix) / TEST_N - summary["test_accuracy"]) <= 1 / TEST_N + 1e-9
    report = (trained / "report.md").read_text()
    for name in PNGS:
        assert f"](plots/{name})" in report, name
    assert f"| test accuracy | {summary['test_accuracy']:.4f} |" in report
    assert "| epochs | 2 of 2 |" in report and "| steps | 40 of 40 |" in report
    for name, count, correct in zip(data.CLASS_NAMES, matrix.sum(axis=1), np.diag(matrix)):
        assert f"| {name} | {count} | {correct} |" in report, name
    assert "No summary.json" not in report


@pytest.mark.slow
def test_batched_predictions_do_not_depend_on_the_batch_size(trained, tiny_idx):
    from fashion_jax import data, predict, report

    config, state = predict.load_trained(trained)
    test = data.read_idx(tiny_idx, "test")
    whole = report.predict_classes(state, test.images, config)
    padded = report.predict_classes(
        state, test.images, config, batch_size=64
    )  # 3 x 64 + 8 (padded).
    np.testing.assert_array_equal(whole, padded)
    matrix = report.confusion_matrix(test.labels, whole)
    saved = np.array(json.loads((trained / "plots" / "confusion_matrix.json").read_text()))
    np.testing.assert_array_equal(matrix, saved)


@pytest.mark.slow
def test_cli_regenerates_the_report_after_a_crash(crashed):
    proc = run_module("fashion_jax.report", "--workdir", crashed, check=True)
    printed = proc.stdout.split()
    for name in PNGS:
        assert str(crashed / "plots" / name) in printed, name
        assert png_size(crashed / "plots" / name)[0] >= 400
    assert str(crashed / "report.md") in printed
    assert (
        np.array(json.loads((crashed / "plots" / "confusion_matrix.json").read_text())).sum()
        == TEST_N
    )
    report = (crashed / "report.md").read_text()
    assert "No summary.json" in report
    assert "| epochs | 1 of 2 |" in report and "| steps | 20 |" in report
    first_eval = json.loads(
        [line for line in (crashed / "metrics.jsonl").read_text().splitlines() if '"eval"' in line][
            0
        ]
    )
    assert f"| test accuracy | {first_eval['test_accuracy']:.4f} |" in report
    for name in PNGS:
        assert f"](plots/{name})" in report


@pytest.mark.slow
def test_compare_two_workdirs(trained, crashed, tmp_path):
    output = tmp_path / "both.png"
    proc = run_module(
        "fashion_jax.report", "--compare", trained, crashed, "--output", output, check=True
    )
    assert png_size(output)[0] >= 400 and output.stat().st_size > 10_000
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in proc.stdout.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    assert set(rows) == {"workdir", "finished", "crashed *"}, proc.stdout
    evals = [
        json.loads(line)
        for line in (trained / "metrics.jsonl").read_text().splitlines()
        if '"eval"' in line
    ]
    assert rows["finished"][0] == "2" and rows["crashed *"][0] == "1"
    assert rows["finished"][1] == f"{max(r['test_accuracy'] for r in evals):.4f}"
    assert rows["finished"][2] == f"{evals[-1]['test_accuracy']:.4f}"
    assert rows["finished"][3] == f"{evals[-1]['test_loss']:.4f}"
    assert rows["crashed *"][2] == f"{evals[0]['test_accuracy']:.4f}"


def test_compare_default_output_is_in_the_current_folder(trained, tmp_path, monkeypatch, capsys):
    from fashion_jax import report

    monkeypatch.chdir(tmp_path)
    assert report.main(["--compare", str(trained)]) == 0
    assert png_size(tmp_path / "comparison.png")[0] >= 400
    assert "finished" in capsys.readouterr().out


def test_report_errors_exit_cleanly(tmp_path, capsys):
    from fashion_jax import report

    assert_clean_error(
        run_module("fashion_jax.report", "--workdir", tmp_path / "nope"), "does not exist"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main(["--workdir", str(empty)]) == 2
    assert "has no config.json" in capsys.readouterr().err
    (empty / "config.json").write_text("{}")
    assert report.main(["--workdir", str(empty)]) == 2
    assert "neither metrics.jsonl nor a checkpoint" in capsys.readouterr().err
    assert report.main(["--compare", str(empty)]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err
    assert not (empty / "plots").exists()


def test_report_without_checkpoint_draws_the_curves_only(trained, tmp_path):
    from fashion_jax import report

    workdir = tmp_path / "no_ckpt"
    workdir.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        shutil.copy(trained / name, workdir / name)
    written = report.write_report(workdir)
    assert [p.name for p in written] == ["curves.png", "report.md"]
    text = (workdir / "report.md").read_text()
    assert "Test-set figures skipped" in text and "](plots/curves.png)" in text


# ----------------------------------------------------------------------------- predict on files


def light_background_png(path):
    """100x60 RGB: a light grey shirt-like block on white."""
    from PIL import Image

    rgb = np.full((60, 100, 3), 255, np.uint8)
    rgb[10:50, 30:70] = (170, 180, 190)
    rgb[10:22, 15:85] = (170, 180, 190)
    Image.fromarray(rgb).save(path)
    return path


def dark_background_jpeg(path):
    """100x60 greyscale JPEG: a bright trouser-like shape on black."""
    from PIL import Image

    grey = np.zeros((60, 100), np.uint8)
    grey[5:55, 35:47] = 220
    grey[5:55, 53:65] = 220
    grey[5:12, 35:65] = 220
    Image.fromarray(grey).save(path, quality=90)
    return path


@pytest.mark.slow
def test_predict_on_image_files(trained, tmp_path):
    from fashion_jax.data import CLASS_NAMES

    files = [
        light_background_png(tmp_path / "shirt.png"),
        dark_background_jpeg(tmp_path / "trousers.jpg"),
    ]
    proc = run_module("fashion_jax.predict", "--workdir", trained, *files, check=True)
    pattern = re.compile("(" + "|".join(map(re.escape, CLASS_NAMES)) + r") ([0-9.]+)")
    for file in files:
        line = next(line for line in proc.stdout.splitlines() if line.startswith(f"{file}: "))
        ranked = pattern.findall(line.split(": ", 1)[1].split(" -> ")[0])
        assert len(ranked) == 3 and len({name for name, _ in ranked}) == 3, line
        probs = [float(p) for _, p in ranked]
        assert all(0 <= p <= 1 for p in probs) and probs == sorted(probs, reverse=True), line
        assert sum(probs) <= 1 + 1.5e-3, line  # Printed with 3 decimals.
        assert png_size(trained / "predictions" / f"{file.stem}.png")[0] > 100


@pytest.mark.slow
def test_predict_refuses_a_file_that_is_not_an_image(trained, tmp_path):
    fake = tmp_path / "x.png"
    fake.write_text("this is text, not a picture\n")
    assert_clean_error(
        run_module("fashion_jax.predict", "--workdir", trained, fake),
        "x.png is not an image",
        "PNG or JPEG",
    )


def test_load_image_file_looks_like_fashion_mnist(tmp_path):
    from fashion_jax.predict import load_image_file

    light = load_image_file(light_background_png(tmp_path / "light.png"))  # 70x40 object: wide.
    dark = load_image_file(dark_background_jpeg(tmp_path / "dark.jpg"))  # 30x50 object: tall.
    for image in (light, dark):
        assert image.dtype == np.uint8 and image.shape == (28, 28, 1)
        assert image.max() > 200  # The object is light.
        rows, cols = np.nonzero(image[..., 0] > 25)
        assert max(np.ptp(rows) + 1, np.ptp(cols) + 1) >= 26  # Its longer side fills the 28 pixels.
    # The white background became black: the object touches the left and right edges only.
    border = np.concatenate([light[0], light[-1], light[:, 0], light[:, -1]])
    assert border.mean() < 40 and (border < 25).mean() > 0.8, border.mean()
    assert (
        light[:4].max() == 0 and light[-4:].max() == 0
    )  # Padding above and below the wide object.
    assert dark[:, :4].max() == 0 and dark[:, -4:].max() == 0  # Padding beside the tall object.
