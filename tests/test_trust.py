"""A run is what it was: a rerun, predict, report and export notice when the model's code, its
parameters or the data differ from what trained, refuse a resume with one line (nothing on disk
changed), and never take an incompatible checkpoint for a damaged one."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from conftest import fingerprint, runner_args

NET = """import flax.linen as nn


class Net(nn.Module):
    num_classes: int
    hidden: int = 16

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)
"""

CONFIG = """from fashion_jax.config import get_config as defaults


def get_config():
    c = defaults()
    c.model = "net:Net"
    return c
"""


@pytest.fixture(autouse=True)
def no_bytecode(monkeypatch):
    """Importing net.py writes no __pycache__ beside it (the folder's fingerprint is compared)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


@pytest.fixture(scope="module")
def args(tiny_idx, tiny_tfds):
    """One short epoch of 4 steps on the tiny dataset."""
    return runner_args(tiny_idx, tiny_tfds, num_epochs=1, max_train_examples=128)


def forget_user_modules():
    """Drops the user model files this process imported, as a new process would not have them."""
    for name in [n for n in sys.modules if n.startswith("fashion_jax_user_model_")]:
        del sys.modules[name]


def experiment(folder, net=NET, config=CONFIG, **files):
    """An experiment folder (config.py, net.py and `files`), which is also the run's workdir."""
    folder.mkdir(parents=True)
    for name, text in {"config.py": config, "net.py": net, **files}.items():
        (folder / f"{name}.py" if "." not in name else folder / name).write_text(text)
    forget_user_modules()
    return folder


def run(workdir, args, *extra) -> int:
    from fashion_jax import run as run_lib

    return run_lib.main(["--workdir", str(workdir), *args, *extra])


def refused(capsys, workdir, command, *fragments):
    """`command()` (a command's `main`) exits 2 with one `error:` line holding `fragments`, no
    traceback, and `workdir` unchanged on disk."""
    before = fingerprint(workdir)
    capsys.readouterr()
    status = command()
    out, err = capsys.readouterr()
    assert status == 2, err
    assert "Resuming" not in out, out
    # (tfds' progress bars may come first, when a dataset is prepared.)
    assert err.startswith("error: ") or "\nerror: " in err or "\rerror: " in err, err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert fingerprint(workdir) == before, err
    return err


@pytest.fixture
def trained(tmp_path, args):
    """experiments/mine trained for one epoch (4 steps) with net.py's Net. (Its config.json
    names this folder as model_dir, so a copy would read the original's net.py: one per test.)"""
    folder = experiment(tmp_path / "mine")
    assert run(folder, args) == 0
    forget_user_modules()
    return folder


def refuses(workdirs, call, *fragments):
    """`call()` raises a one-line `CheckpointError` holding `fragments`; `workdirs` (a folder or a
    list of them) unchanged on disk."""
    from fashion_jax.errors import CheckpointError

    workdirs = workdirs if isinstance(workdirs, list) else [workdirs]
    before = [fingerprint(w) for w in workdirs]
    with pytest.raises(CheckpointError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert [fingerprint(w) for w in workdirs] == before, message
    return message


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    forget_user_modules()  # What a new process would import.


# ----------------------------------------------------------------------------- the model's code


def test_the_model_record_names_the_files_and_the_parameters(trained):
    record = json.loads((trained / "model.json").read_text())
    assert record["model"] == "net:Net" and record["changes"] == []
    assert record["code"]["kind"] == "files" and list(record["code"]["files"]) == ["net.py"]
    assert record["params"]["shapes"]["params/Dense_0/kernel"] == "float32[784, 16]"
    assert record["params"]["count"] == 784 * 16 + 16 + 16 * 10 + 10


def test_an_edited_model_file_is_refused_and_continued_only_on_purpose(trained, args, capsys):
    from fashion_jax import predict

    edit(trained / "net.py", "nn.relu(", "nn.tanh(")  # Same parameters, other code.
    refused(
        capsys,
        trained,
        lambda: run(trained, args, "--config.num_epochs=2"),
        f"{trained / 'net.py'} changed",
        "--restart",
        "--config.continue_with_changed_code=true",
    )
    # The readers say so, once, and still classify with the code as it is.
    assert predict.main(["--workdir", str(trained), "--index", "0"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and f"{trained / 'net.py'} changed" in err, err
    # On purpose: the run goes on with the edited code, and its records say so.
    forget_user_modules()
    assert run(trained, args, "--config.num_epochs=2", "--config.continue_with_changed_code=1") == 0
    out = capsys.readouterr().out
    assert "note: continuing the run" in out and "Resuming from the checkpoint at step 4" in out
    record = json.loads((trained / "model.json").read_text())
    assert [c["step"] for c in record["changes"]] == [4]
    assert json.loads((trained / "config.json").read_text())["continue_with_changed_code"] is True
    # The edited code is now the run's: a plain rerun resumes, the config keeps the record.
    forget_user_modules()
    assert run(trained, args, "--config.num_epochs=3") == 0
    assert "Resuming from the checkpoint at step 8" in capsys.readouterr().out
    assert json.loads((trained / "config.json").read_text())["continue_with_changed_code"] is True
    assert predict.main(["--workdir", str(trained), "--index", "0"]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_a_sweep_over_an_edited_model_refuses_instead_of_reporting_the_old_run(
    tmp_path, args, capsys
):
    from fashion_jax import sweep

    folder = experiment(tmp_path / "mine")
    command = ["--workdir", str(folder), "--seeds", "0", *args]
    assert sweep.main(command) == 0
    edit(folder / "net.py", "nn.relu(", "nn.tanh(")
    refused(capsys, folder, lambda: sweep.main(command), "net.py changed", "--restart")


def test_an_edited_file_that_the_model_imports_is_refused(tmp_path, args, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path / "mine"))
    net = NET.replace("import flax.linen as nn\n", "import flax.linen as nn\nimport trust_act\n")
    net = net.replace("nn.relu(", "trust_act.act(")
    folder = experiment(
        tmp_path / "mine", net=net, trust_act="import flax.linen as nn\n\nact = nn.relu\n"
    )
    try:
        assert run(folder, args) == 0
        record = json.loads((folder / "model.json").read_text())
        assert sorted(record["code"]["files"]) == ["net.py", "trust_act.py"]
        edit(folder / "trust_act.py", "nn.relu", "nn.tanh")
        refused(
            capsys,
            folder,
            lambda: run(folder, args, "--config.num_epochs=2"),
            f"{folder / 'trust_act.py'} changed",
            "--restart",
        )
    finally:
        sys.modules.pop("trust_act", None)


def test_model_kwargs_defaults_changed_in_code_are_refused(trained, args, capsys):
    edit(trained / "net.py", "hidden: int = 16", "hidden: int = 32")
    refused(capsys, trained, lambda: run(trained, args, "--config.num_epochs=2"), "net.py changed")
    # Continued on purpose, the parameters no longer fit the checkpoint: refused all the same.
    refused(
        capsys,
        trained,
        lambda: run(
            trained, args, "--config.num_epochs=2", "--config.continue_with_changed_code=true"
        ),
        "params/Dense_0/kernel float32[784, 16] -> float32[784, 32]",
        "--restart",
    )


def test_a_renamed_model_class_is_refused(trained, args, capsys):
    edit(trained / "net.py", "class Net(", "class Network(")
    # The config still names Net: it no longer exists.
    refused(capsys, trained, lambda: run(trained, args), "defines no 'Net'")
    # The config names the new class: another model than the run's.
    rename = lambda: run(trained, args, "--config.model=net:Network")
    refused(capsys, trained, rename, "net:Network")


def test_another_fashion_jax_version_is_refused_for_a_built_in_model(
    builtin, args, capsys, monkeypatch
):
    from fashion_jax import fingerprints, predict

    installed = fingerprints.version("fashion_jax")
    monkeypatch.setattr(fingerprints, "version", lambda name: "9.9.9")
    refused(
        capsys,
        builtin,
        lambda: run(builtin, args, "--config.num_epochs=2"),
        f"fashion_jax {installed}, now fashion_jax 9.9.9",
        "continue_with_changed_code",
    )
    assert predict.main(["--workdir", str(builtin), "--index", "0"]) == 0
    assert capsys.readouterr().err.count("warning: the model's code changed") == 1


def test_a_run_older_than_the_records_resumes_and_records_them(builtin, args, capsys):
    (builtin / "model.json").unlink()
    assert run(builtin, args, "--config.num_epochs=2") == 0
    assert "Resuming from the checkpoint at step 4" in capsys.readouterr().out
    record = json.loads((builtin / "model.json").read_text())
    from fashion_jax import fingerprints

    assert record["code"] == {
        "kind": "package",
        "package": "fashion_jax",
        "version": fingerprints.version("fashion_jax"),
    }


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory, args):
    """seed_cnn trained for one epoch on the tiny Fashion-MNIST (a copy per test: `builtin`)."""
    w = tmp_path_factory.mktemp("builtin") / "w"
    assert run(w, args) == 0
    return w


@pytest.fixture
def builtin(builtin_run, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(builtin_run, copy)
    return copy


# ----------------------------------------------------------------------------- the data


def arrays(n, classes, seed, shape=(8, 8, 1)):
    """uint8 images [n, *shape] and labels in 0..classes-1."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape)).astype(np.uint8), rng.integers(0, classes, n)


def memory_data(classes=5, seed=0):
    return {"train": arrays(64, classes, seed), "test": arrays(16, classes, seed + 100)}


def memory_config(folder, **values):
    """net.py's Net (in `folder`, written there if absent) for one short epoch on in-memory 8x8
    images."""
    from fashion_jax import config as config_lib

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "net.py").exists():
        (folder / "net.py").write_text(NET)
    c = config_lib.get_config()
    settings = dict(
        model="net:Net",
        model_dir=str(folder),
        num_epochs=1,
        batch_size=16,
        log_every_steps=2,
        eval_batch_size=16,
        progress_bar=False,
    )
    for k, v in {**settings, **values}.items():
        c[k] = v
    return c


@pytest.fixture
def memory_run(tmp_path):
    """A run of 4 steps on `memory_data()` (5 classes) in tmp_path/w."""
    from fashion_jax.train import train_and_evaluate

    forget_user_modules()
    w = tmp_path / "w"
    train_and_evaluate(memory_config(tmp_path / "exp"), w, data=memory_data(), report=False)
    return w


@pytest.mark.parametrize(
    "other, fragment",
    [
        (memory_data(classes=3), "classes 5 -> 3"),
        (memory_data(seed=7), "the train split holds other values"),
        ({**memory_data(), "validation": arrays(8, 5, 3)}, "a validation split now"),
    ],
    ids=["another class count", "other arrays of the same shapes", "another split"],
)
def test_a_resume_on_other_in_memory_data_is_refused(memory_run, tmp_path, other, fragment):
    from fashion_jax.train import train_and_evaluate

    record = json.loads((memory_run / "dataset.json").read_text())
    assert (
        record["num_classes"] == 5 and record["splits"]["train"]["images"] == "uint8[64, 8, 8, 1]"
    )
    config = memory_config(tmp_path / "exp", num_epochs=2)
    # No checkpoint set aside, no record overwritten.
    refuses(
        memory_run,
        lambda: train_and_evaluate(config, memory_run, data=other, report=False),
        "was trained on other data",
        fragment,
        "--restart",
    )
    # The same data resumes.
    summary = train_and_evaluate(config, memory_run, data=memory_data(), report=False)
    assert summary["steps"] == 8


def test_a_dataset_json_older_than_the_fingerprint_still_guards_the_class_count(
    memory_run, tmp_path
):
    from fashion_jax.train import train_and_evaluate

    path = memory_run / "dataset.json"
    record = json.loads(path.read_text())
    path.write_text(
        json.dumps({k: record[k] for k in ("image_shape", "num_classes", "class_names")})
    )
    config = memory_config(tmp_path / "exp", num_epochs=2)
    other = memory_data(classes=3)
    refuses(
        memory_run,
        lambda: train_and_evaluate(config, memory_run, data=other, report=False),
        "classes 5 -> 3",
    )
    # Same data: resumes, and records the fingerprint from then on.
    train_and_evaluate(config, memory_run, data=memory_data(), report=False)
    assert "splits" in json.loads(path.read_text())


def test_a_resume_on_another_prepared_dataset_is_refused(builtin, args, tmp_path, capsys):
    """data_dir and idx_dir may change on resume (where the data lives), not the data itself."""
    from conftest import write_idx

    other = write_idx(tmp_path / "idx2", seed=1)
    elsewhere = [f"--config.data_dir={tmp_path / 'tfds2'}", f"--config.idx_dir={other}"]
    refused(
        capsys,
        builtin,
        lambda: run(builtin, args, "--config.num_epochs=2", *elsewhere),
        "was trained on other data",
        "train split holds other values",
    )


# ----------------------------------------------------------------------------- incompatible is not damaged


def strip_records(workdir):
    """Makes `workdir` look like a run older than model.json and dataset.json."""
    (workdir / "model.json").unlink()
    (workdir / "dataset.json").unlink()


def test_a_checkpoint_of_other_shapes_is_refused_not_set_aside(memory_run, tmp_path):
    from fashion_jax.train import train_and_evaluate

    strip_records(memory_run)  # Nothing recorded: the checkpoint's own metadata tells.
    config = memory_config(tmp_path / "exp", num_epochs=2)
    other = memory_data(classes=3)
    refuses(
        memory_run,
        lambda: train_and_evaluate(config, memory_run, data=other, report=False),
        "holds other arrays than this run's state",
        "float32[16, 5] -> float32[16, 3]",
        "--restart",
    )
    assert not (memory_run / "checkpoints_invalid").exists()


def test_a_reader_refuses_a_checkpoint_its_records_do_not_describe(memory_run, capsys):
    from fashion_jax.trained import load_trained

    path = memory_run / "dataset.json"
    path.write_text(path.read_text().replace('"num_classes": 5', '"num_classes": 3'))
    refuses(memory_run, lambda: load_trained(memory_run), "float32[16, 5] -> float32[16, 3]")
    assert "unreadable" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "error, fragment",
    [
        (lambda: RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4 GiB"), "memory"),
        (lambda: PermissionError(13, "Permission denied", "/x/state/d/0"), "Permission denied"),
    ],
    ids=["out of memory", "permission denied"],
)
def test_a_restore_that_fails_for_want_of_memory_or_permission_sets_nothing_aside(
    memory_run, tmp_path, monkeypatch, error, fragment
):
    import orbax.checkpoint as ocp

    from fashion_jax.train import train_and_evaluate

    restore = ocp.CheckpointManager.restore

    def failing(self, step, args=None, **kwargs):
        if args is not None and "state" in args:
            raise error()
        return restore(self, step, args=args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", failing)
    config = memory_config(tmp_path / "exp", num_epochs=2)
    refuses(
        memory_run,
        lambda: train_and_evaluate(config, memory_run, data=memory_data(), report=False),
        fragment,
        "nothing was set aside",
    )


def test_two_restarts_within_a_second_keep_both_backups(memory_run, tmp_path, monkeypatch):
    from fashion_jax import workdir as workdir_lib
    from fashion_jax.train import train_and_evaluate

    class Frozen:  # Both restarts in the same second.
        @staticmethod
        def strftime(fmt):
            return "backup-20260101-000000"

    monkeypatch.setattr(workdir_lib, "time", Frozen)
    config = memory_config(tmp_path / "exp")
    first = fingerprint(memory_run)
    train_and_evaluate(config, memory_run, restart=True, data=memory_data(seed=1), report=False)
    second = {k: v for k, v in fingerprint(memory_run).items() if not k.startswith("backup-")}
    train_and_evaluate(config, memory_run, restart=True, data=memory_data(seed=2), report=False)
    a, b = memory_run / "backup-20260101-000000", memory_run / "backup-20260101-000000-2"
    assert fingerprint(a) == first and fingerprint(b) == second


# ----------------------------------------------------------------------------- transparent images


def glyph(size=40):
    """float[size, size] in 0..1: a shape with a darker inner patch (0 outside)."""
    import numpy as np

    a = np.zeros((size, size))
    a[8:32, 12:28] = 1.0
    a[14:20, 16:24] = 0.5
    return a


def png(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array, mode).save(path)
    return path


@pytest.mark.parametrize("colour", [255, 0], ids=["white glyph", "black glyph"])
@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_glyph_drawn_by_its_alpha_channel_is_read_as_its_alpha(tmp_path, colour, mode):
    """The colour channels carry nothing (one colour): the alpha channel is the image, light on
    dark, whatever that colour is; not an all-black image."""
    import numpy as np

    from fashion_jax import predict

    shape = (glyph() > 0) * 255
    channels = 3 if mode == "RGBA" else 1
    pixels = np.concatenate(
        [np.full((40, 40, channels), colour), shape[..., None]], axis=-1
    ).astype(np.uint8)
    image = predict.load_image_file(png(tmp_path / "g.png", pixels, mode))
    light_on_dark = predict.load_image_file(png(tmp_path / "o.png", shape.astype(np.uint8)))
    assert (image > 25).sum() > 100
    np.testing.assert_array_equal(image, light_on_dark)


def test_a_coloured_transparent_image_is_composited_on_the_datas_background(tmp_path):
    """Shading in the colours: they are the image, on Fashion-MNIST's black (the inner patch
    stays darker than the rest, as drawn), not on white (which would invert it)."""
    import numpy as np

    from fashion_jax import predict

    g = glyph()
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = (g[..., None] * [230, 200, 170]).astype(np.uint8)
    rgba[..., 3] = (g > 0) * 255
    image = predict.load_image_file(png(tmp_path / "c.png", rgba))
    grey = predict.load_image_file(png(tmp_path / "grey.png", rgba[..., :3].copy()))
    np.testing.assert_array_equal(image, grey)  # As if drawn on black.
    assert image[14, 14, 0] > image[13, 14, 0]  # Inner patch (scaled) darker than the rest.


def test_a_transparent_image_for_a_colour_model_takes_the_recorded_background(tmp_path):
    import numpy as np

    from fashion_jax import predict

    g = glyph()
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = (g[..., None] * [230, 60, 20]).astype(np.uint8)
    rgba[..., 3] = (g > 0) * 255
    path = png(tmp_path / "c.png", rgba)
    image = predict.load_image_file(path, (20, 20, 3), background=[255, 255, 255])
    assert image[0, 0].tolist() == [255, 255, 255]  # Transparent: the data's white.
    assert image[10, 10, 0] > 2 * image[10, 10, 2]  # The object keeps its colour.
    black = predict.load_image_file(path, (20, 20, 3))
    assert black[0, 0].tolist() == [0, 0, 0]  # Nothing recorded: black, Fashion-MNIST's.


def test_dataset_json_records_the_background_predict_uses(memory_run):
    import numpy as np

    from fashion_jax import fingerprints, predict

    (value,) = json.loads((memory_run / "dataset.json").read_text())["background"]
    assert 100 <= value <= 156  # Uniform noise in 0..255.
    assert predict.data_background(memory_run) == [float(value)]
    black = np.zeros((5, 28, 28, 1), np.uint8)
    white_rgb = np.ones((5, 8, 8, 3), np.float32)
    assert fingerprints.background(black) == [0]
    assert fingerprints.background(white_rgb) == [255, 255, 255]


# ----------------------------------------------------------------------------- the same refusals everywhere


def test_an_old_run_whose_model_now_has_other_shapes_is_refused_by_the_cli(trained, args, capsys):
    """No model.json to compare (a run older than it): the checkpoint's own metadata refuses."""
    (trained / "model.json").unlink()
    edit(trained / "net.py", "hidden: int = 16", "hidden: int = 24")
    refused(
        capsys,
        trained,
        lambda: run(trained, args, "--config.num_epochs=2"),
        "holds other arrays than this run's state",
        "float32[784, 16] -> float32[784, 24]",
        "--restart",
    )


@pytest.fixture
def population_run(tmp_path):
    """Two members (seeds 0, 1) of net.py's Net trained together on `memory_data()`."""
    from fashion_jax import population

    forget_user_modules()
    configs = [memory_config(tmp_path / "exp", seed=s) for s in (0, 1)]
    workdirs = [tmp_path / "m0", tmp_path / "m1"]
    population.train_population(configs, workdirs, data=memory_data(), report=False)
    return tmp_path, workdirs


def population_refuses(root, workdirs, data, *fragments):
    from fashion_jax import population

    configs = [memory_config(root / "exp", seed=s, num_epochs=2) for s in (0, 1)]
    refuses(
        workdirs,
        lambda: population.train_population(configs, workdirs, data=data, report=False),
        *fragments,
    )


def test_a_population_refuses_other_data(population_run):
    root, workdirs = population_run
    population_refuses(root, workdirs, memory_data(classes=3), "classes 5 -> 3")
    population_refuses(root, workdirs, memory_data(seed=9), "train split holds other values")


def test_a_population_refuses_edited_model_code(population_run):
    root, workdirs = population_run
    edit(root / "exp" / "net.py", "nn.relu(", "nn.gelu(")
    population_refuses(
        root, workdirs, memory_data(), f"{root / 'exp' / 'net.py'} changed", "--restart"
    )


def test_a_population_refuses_a_checkpoint_of_other_shapes(population_run):
    root, workdirs = population_run
    for w in workdirs:
        strip_records(w)
    population_refuses(
        root, workdirs, memory_data(classes=3), "holds other arrays than this run's state"
    )
