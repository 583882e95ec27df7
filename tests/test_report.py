"""Reports and plots (`fashion_jax.report`) and `fashion_jax.predict` on image files, after one tiny run."""

from __future__ import annotations

import json
import re
import shutil
import struct

import numpy as np
import pytest

from conftest import assert_clean_error, run_here, run_module, runner_args

PNGS = ("curves.png", "confusion_matrix.png", "per_class_accuracy.png", "samples.png")
TEST_N = 200  # conftest.write_idx's default test split.


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in `text`: a list of rows (the header first), each a list of cells;
    the |---| line is checked and dropped."""
    tables, current = [], None
    for line in text.splitlines() + [""]:
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line[1:-1].split("|")]
            if current is None:
                current = [cells]
            elif not current[1:] and all(re.fullmatch(r"-+:?", c) for c in cells):
                assert len(cells) == len(current[0]), line
                current.append(None)  # The separator, dropped below.
            else:
                assert len(cells) == len(current[0]), line
                current.append(cells)
        elif current is not None:
            assert current[1:2] == [None], f"a table without its |---| line: {current}"
            tables.append([current[0], *current[2:]])
            current = None
    return tables


def report_numbers(text: str) -> tuple[dict[str, str], dict[str, tuple[int, int, float]]]:
    """report.md's two tables: {summary key: value} and {class: (test images, correct, accuracy)}."""
    tables = markdown_tables(text)
    summary = {row[0]: row[1] for row in tables[0][1:]}
    per_class = {}
    for t in tables[1:]:
        if t[0][:4] == ["class", "test images", "correct", "accuracy"]:
            per_class = {r[0]: (int(r[1]), int(r[2]), float(r[3].rstrip("%")) / 100) for r in t[1:]}
    return summary, per_class


def test_markdown_tables_reads_what_the_formatter_writes():
    from fashion_jax.formatting import table

    text = "# x\n\n" + table(["a", "b"], [[1, "n/a"], ["c", 2.5]], align="lr") + "\n\ntext"
    assert markdown_tables(text) == [[["a", "b"], ["1", "n/a"], ["c", "2.5"]]]
    with pytest.raises(AssertionError):
        markdown_tables("| a | b |\n| 1 | 2 |\n")
    with pytest.raises(ValueError):
        table(["a", "b"], [[1]])


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
    run_here("fashion_jax.run", "--workdir", workdir, *module_args, check=True)
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
    numbers, per_class = report_numbers(report)
    assert float(numbers["test accuracy"]) == pytest.approx(summary["test_accuracy"], abs=5e-5)
    assert float(numbers["test loss"]) == pytest.approx(summary["test_loss"], abs=5e-5)
    assert numbers["epochs"].split() == ["2", "of", "2"]
    assert numbers["steps"].split() == ["40", "of", "40"]
    assert numbers["model"] == "seed_cnn"
    assert float(numbers["train seconds"]) == pytest.approx(summary["train_seconds"], abs=0.05)
    assert list(per_class) == list(data.CLASS_NAMES)
    for name, count, correct in zip(data.CLASS_NAMES, matrix.sum(axis=1), np.diag(matrix)):
        assert per_class[name][:2] == (count, correct), name
        if count:
            assert per_class[name][2] == pytest.approx(correct / count, abs=5e-5), name
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
    numbers, per_class = report_numbers(report)
    assert numbers["epochs"].split() == ["1", "of", "2"] and numbers["steps"] == "20"
    assert sum(count for count, _, _ in per_class.values()) == TEST_N
    first_eval = json.loads(
        [line for line in (crashed / "metrics.jsonl").read_text().splitlines() if '"eval"' in line][
            0
        ]
    )
    assert float(numbers["test accuracy"]) == pytest.approx(first_eval["test_accuracy"], abs=5e-5)
    for name in PNGS:
        assert f"](plots/{name})" in report


@pytest.mark.slow
def test_compare_two_workdirs(trained, crashed, tmp_path):
    output = tmp_path / "both.png"
    proc = run_here(
        "fashion_jax.report", "--compare", trained, crashed, "--output", output, check=True
    )
    assert png_size(output)[0] >= 400 and output.stat().st_size > 10_000
    (header, *body), *rest = markdown_tables(proc.stdout)
    assert not rest and header[:2] == ["workdir", "epochs"], proc.stdout
    rows = {r[0]: r[1:] for r in [header, *body]}
    assert set(rows) == {"workdir", "finished", "crashed *"}, proc.stdout
    evals = [
        json.loads(line)
        for line in (trained / "metrics.jsonl").read_text().splitlines()
        if '"eval"' in line
    ]
    assert rows["finished"][0] == "2" and rows["crashed *"][0] == "1"
    finished, crashed_row = (
        [float(v) for v in rows["finished"]],
        [float(v) for v in rows["crashed *"]],
    )
    assert finished[1] == pytest.approx(max(r["test_accuracy"] for r in evals), abs=5e-5)
    assert finished[2] == pytest.approx(evals[-1]["test_accuracy"], abs=5e-5)
    assert finished[3] == pytest.approx(evals[-1]["test_loss"], abs=5e-5)
    assert crashed_row[2] == pytest.approx(evals[0]["test_accuracy"], abs=5e-5)
    assert crashed_row[4] == pytest.approx(evals[0]["epoch_seconds"], abs=0.05)


def test_compare_default_output_is_in_the_current_folder(trained, tmp_path, monkeypatch, capsys):
    from fashion_jax import report

    monkeypatch.chdir(tmp_path)
    assert report.main(["--compare", str(trained)]) == 0
    assert png_size(tmp_path / "comparison.png")[0] >= 400
    assert "finished" in capsys.readouterr().out


def test_report_errors_exit_cleanly(tmp_path, capsys):
    from fashion_jax import report

    assert_clean_error(
        run_here("fashion_jax.report", "--workdir", tmp_path / "nope"), "does not exist"
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
        run_here("fashion_jax.predict", "--workdir", trained, fake),
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
