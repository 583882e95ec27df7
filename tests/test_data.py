import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REAL_IDX_DIR, requires_real_data
from fashion_jax import data, data_cache, fashion_mnist
from fashion_jax.errors import DataError


def test_read_idx_reads_what_was_written(tiny_idx):
    train = data.read_idx(tiny_idx, "train")
    test = data.read_idx(tiny_idx, "test")
    assert train.images.shape == (640, 28, 28, 1) and train.images.dtype == np.uint8
    assert test.labels.shape == (200,) and test.labels.dtype == np.int32
    assert 0 <= train.labels.min() and train.labels.max() <= 9


def test_tfds_dataset_built_offline_matches_the_idx_files_in_idx_order(tiny_idx, tiny_tfds):
    splits = data.load(str(tiny_tfds), str(tiny_idx), download=False)
    for split in ("train", "test"):
        raw = data.read_idx(tiny_idx, split)
        np.testing.assert_array_equal(splits[split].images, raw.images)
        np.testing.assert_array_equal(splits[split].labels, raw.labels)
    import tensorflow_datasets as tfds

    info = tfds.builder("fashion_mnist", data_dir=str(tiny_tfds)).info
    assert info.features["label"].names == list(data.CLASS_NAMES)
    assert info.splits["train"].num_examples == 640 and info.splits["test"].num_examples == 200


def corrupt_variants(src, dst_root):
    """Yields (name, folder) with one IDX file damaged in a different way each time."""
    name = "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress((src / name).read_bytes())
    variants = {
        "truncated gzip": (src / name).read_bytes()[:500],
        "truncated body": gzip.compress(raw[:-100]),
        "garbage": b"this is not a gzip file at all",
        "wrong magic": gzip.compress(b"\x00\x00\x08\x99" + raw[4:]),
    }
    for label, payload in variants.items():
        folder = dst_root / label.replace(" ", "_")
        shutil.copytree(src, folder)
        (folder / name).write_bytes(payload)
        yield label, folder


def test_corrupt_or_truncated_idx_files_raise_a_clear_error(tiny_idx, tmp_path):
    for label, folder in corrupt_variants(tiny_idx, tmp_path):
        with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz") as e:
            data.prepare(str(tmp_path / f"tfds_{folder.name}"), str(folder), download=False)
        assert "apt-get install dataset-fashion-mnist" in str(e.value), label
        assert not (tmp_path / f"tfds_{folder.name}" / "fashion_mnist" / "3.0.1").exists(), label


def test_processes_preparing_one_data_dir_take_turns(tiny_idx, tmp_path):
    """While one preparer holds the data dir's lock, another waits (nothing written), then finds
    the dataset prepared or prepares it itself: never two tfds builds into one folder at once."""
    import threading

    target = str(tmp_path / "tfds")
    done = []
    other = threading.Thread(target=lambda: done.append(fashion_mnist.prepare(target, tiny_idx)))
    with fashion_mnist.preparing(target):  # Another preparer at work.
        other.start()
        other.join(timeout=3)
        assert other.is_alive() and not data_cache.builder_dir(target).exists()
    other.join(timeout=120)
    assert not other.is_alive() and done[0].is_prepared()


def test_missing_data_names_the_three_fixes(tmp_path, monkeypatch):
    monkeypatch.delenv(data.IDX_DIR_ENV, raising=False)
    with pytest.raises(DataError) as e:
        data.prepare(str(tmp_path / "tfds"), str(tmp_path / "nowhere"), download=False)
    message = str(e.value)
    assert "nowhere" in message and "does not hold all four files" in message
    for fix in ("apt-get install dataset-fashion-mnist", data.IDX_DIR_ENV, "download"):
        assert fix in message


def test_idx_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(data.IDX_DIR_ENV, str(tmp_path))
    assert data.resolve_idx_dir(None) == tmp_path
    assert data.resolve_idx_dir("/x") == Path("/x")
    monkeypatch.delenv(data.IDX_DIR_ENV)
    assert str(data.resolve_idx_dir(None)) == data.DEFAULT_IDX_DIR


@requires_real_data
def test_real_fashion_mnist_through_tfds():
    splits = data.load(None, str(REAL_IDX_DIR), download=False)  # tfds' default data dir.
    train, test = splits["train"], splits["test"]
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert test.labels[0] == 9 and data.CLASS_NAMES[test.labels[0]] == "Ankle boot"
    assert train.labels[:5].tolist() == [9, 0, 0, 3, 0]
    # The pixels are the IDX files' bytes (the decompressed upstream data).
    for split in (train, test):
        assert split.images.dtype == np.uint8
    assert (
        hashlib.sha256(test.images.tobytes()).hexdigest()
        == hashlib.sha256(
            gzip.decompress((REAL_IDX_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]
        ).hexdigest()
    )
    assert int(test.images.astype(np.int64).sum()) == 573_469_082  # Sum of all test pixels.


def test_decoded_arrays_are_cached_beside_the_dataset_and_a_bad_cache_is_ignored(
    tiny_idx, tiny_tfds, monkeypatch
):
    first = data.load(str(tiny_tfds), str(tiny_idx), download=False)
    cache = data_cache.builder_dir(str(tiny_tfds)) / data.CACHE_NAME
    assert cache.is_file()
    monkeypatch.setattr(
        fashion_mnist, "prepare", lambda *a, **k: pytest.fail("the cache was not used")
    )
    second = data.load(str(tiny_tfds), str(tiny_idx), download=False)
    for split in ("train", "test"):
        np.testing.assert_array_equal(first[split].images, second[split].images)
        np.testing.assert_array_equal(first[split].labels, second[split].labels)
    monkeypatch.undo()
    saved = cache.read_bytes()
    try:
        cache.write_bytes(b"garbage")
        third = data.load(
            str(tiny_tfds), str(tiny_idx), download=False
        )  # Falls back to tfds, rewrites it.
        np.testing.assert_array_equal(third["test"].images, first["test"].images)
        assert cache.read_bytes() != b"garbage"
    finally:
        cache.write_bytes(saved)
