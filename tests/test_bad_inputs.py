"""Bad inputs and faults, one line each: every one ends in exit status 2 and one `error:` line naming
the problem, with no traceback, and loses nothing (a trained workdir's files stay byte for byte).

To add a case, add one `Case(...)` to CASES: the tool (run, predict, report or export), its arguments
(`{w}` is the case's workdir, `{tmp}` a scratch folder, `{data}` the tiny dataset's overrides),
an optional setup of the scratch folder, and the fragments the error must contain. Cases run
in process (each tool's `main`), so the table stays fast.
"""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import fingerprint, runner_args


@dataclasses.dataclass
class Case:
    name: str
    tool: str  # "run", "predict", "report" or "export".
    args: str  # Split on spaces after formatting.
    fragments: tuple[str, ...]
    setup: Callable[[Path, Path], None] | None = None  # (workdir, scratch) -> None.
    trained: bool = False  # Start from a copy of a finished tiny run (and check nothing changed).


def write(relative: str, text: str | bytes):
    def setup(w: Path, tmp: Path):
        path = (w if not relative.startswith("@") else tmp) / relative.lstrip("@")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def experiment(body: str):
    return write("config.py", "from fashion_jax.config import get_config as defaults\n" + body)


def huge_png() -> bytes:
    """A PNG header that claims 40,000 x 40,000 pixels (PIL refuses it before decoding)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )


def replace_by_file(relative: str):
    def setup(w: Path, tmp: Path):
        shutil.rmtree(w / relative, ignore_errors=True)
        (w / relative).write_text("x")

    return setup


def replace_by_folder(relative: str):
    def setup(w: Path, tmp: Path):
        path = (w if not relative.startswith("@") else tmp) / relative.lstrip("@")
        if path.is_file():
            path.unlink()
        path.mkdir(parents=True, exist_ok=True)

    return setup


def hold_lock(w: Path, tmp: Path):
    from fashion_jax.workdir import Lock

    HELD.append(Lock(w).__enter__())


HELD: list = []

CASES = [
    # The config: keys, types, ranges, choices, experiment files.
    Case(
        "unknown key",
        "run",
        "--workdir {w} {data} --config.batchsize=8",
        ("Unknown config key 'batchsize'", "Did you mean 'batch_size'"),
    ),
    Case("wrong type", "run", "--workdir {w} {data} --config.num_epochs=two", ("expected int",)),
    Case(
        "bool that is not one",
        "run",
        "--workdir {w} {data} --config.augment_flip=maybe",
        ("expected bool",),
    ),
    Case(
        "out of range",
        "run",
        "--workdir {w} {data} --config.batch_size=0",
        ("batch_size = 0 is out of range",),
    ),
    Case(
        "negative epochs",
        "run",
        "--workdir {w} {data} --config.num_epochs=-3",
        ("num_epochs = -3",),
    ),
    Case(
        "NaN learning rate",
        "run",
        "--workdir {w} {data} --config.learning_rate=nan",
        ("learning_rate = nan",),
    ),
    Case(
        "alternating flip without flip",
        "run",
        "--workdir {w} {data} --config.augment_flip_alternating=true",
        ("augment_flip_alternating = true needs augment_flip = true",),
    ),
    Case(
        "unknown choice",
        "run",
        "--workdir {w} {data} --config.optimizer=sgdx",
        ("optimizer = 'sgdx' is unknown",),
    ),
    Case(
        "unknown model",
        "run",
        "--workdir {w} {data} --config.model=resnet1000",
        ("model 'resnet1000' is unknown",),
    ),
    Case(
        "unknown dtype",
        "run",
        "--workdir {w} {data} --config.compute_dtype=float8",
        ("compute_dtype",),
    ),
    Case(
        "override without a value", "run", "--workdir {w} {data} --config.seed", ("needs a value",)
    ),
    Case(
        "warm-up longer than the run",
        "run",
        "--workdir {w} {data} --config.warmup_epochs=5",
        ("warmup_epochs = 5.0 is longer than num_epochs = 2",),
    ),
    Case(
        "cosine warm-up fills the run",
        "run",
        "--workdir {w} {data} --config.schedule=cosine --config.warmup_epochs=2",
        ("warmup_epochs = 2.0 fills the whole run",),
    ),
    Case(
        "one-cycle warm-up rounds to the whole run",
        "run",
        "--workdir {w} {data} --config.schedule=onecycle --config.warmup_epochs=1.99",
        ("fills the whole run", "leave none of the run's 40"),
    ),
    Case(
        "validation takes every example",
        "run",
        "--workdir {w} {data} --config.validation_examples=640",
        ("leaves no training data",),
    ),
    Case(
        "batch larger than the data",
        "run",
        "--workdir {w} {data} --config.max_train_examples=20",
        ("larger than the 20 training examples",),
    ),
    Case(
        "config file missing",
        "run",
        "--workdir {w} {data} --config {tmp}/nope.py",
        ("does not exist",),
    ),
    Case(
        "config file not ending in .py runs as Python",
        "run",
        "--workdir {w} {data} --config {tmp}/exp.cfg",
        ("exp.cfg: Unknown config key 'batchsize'",),
        setup=write(
            "@exp.cfg",
            "from fashion_jax.config import get_config as defaults\n"
            "def get_config():\n    c = defaults()\n    c.batchsize = 8\n    return c\n",
        ),
    ),
    Case(
        "config file with a syntax error",
        "run",
        "--workdir {w} {data}",
        ("config.py, line 2: invalid syntax",),
        setup=experiment("def get_config(:\n"),
    ),
    Case(
        "get_config raises",
        "run",
        "--workdir {w} {data}",
        ("line 3: RuntimeError: boom",),
        setup=experiment("def get_config():\n    raise RuntimeError('boom')\n"),
    ),
    Case(
        "get_config returns None",
        "run",
        "--workdir {w} {data}",
        ("get_config() returned NoneType",),
        setup=experiment("def get_config():\n    return None\n"),
    ),
    Case(
        "config imports a missing module",
        "run",
        "--workdir {w} {data}",
        ("ModuleNotFoundError", "not_a_module_xyz"),
        setup=experiment("import not_a_module_xyz\n"),
    ),
    Case(
        "config file without get_config",
        "run",
        "--workdir {w} {data}",
        ("defines no get_config()",),
        setup=experiment("X = 1\n"),
    ),
    Case(
        "config adds a key",
        "run",
        "--workdir {w} {data}",
        ("Unknown config key 'batchsize'",),
        setup=experiment(
            "def get_config():\n    c = defaults()\n    c.batchsize = 8\n    return c\n"
        ),
    ),
    Case(
        "config value of the wrong type",
        "run",
        "--workdir {w} {data}",
        ("'num_epochs' = 'ten' should be a int",),
        setup=experiment(
            "def get_config():\n    c = defaults().to_dict()\n    c['num_epochs'] = 'ten'\n"
            "    return c\n"
        ),
    ),
    Case(
        "process id beyond the process count",
        "run",
        "--workdir {w} {data} --config.num_processes=2 --config.process_id=2",
        ("must be below num_processes",),
    ),
    Case(
        "coordinator address without a port",
        "run",
        "--workdir {w} {data} --config.coordinator_address=host",
        ("HOST:PORT",),
    ),
    # Your own model: "module:Name" (module.py in the workdir here) and model_kwargs.
    Case(
        "model module that does not exist",
        "run",
        "--workdir {w} {data} --config.model=no_such_module_xyz:Net",
        ("no module 'no_such_module_xyz'",),
    ),
    Case(
        "model path without a class name",
        "run",
        "--workdir {w} {data} --config.model=net:",
        ("is not an import path 'module:Name'",),
    ),
    Case(
        "model class that does not exist",
        "run",
        "--workdir {w} {data} --config.model=net:Net",
        ("defines no 'Net'", "it defines X"),
        setup=write("net.py", "X = 1\n"),
    ),
    Case(
        "model file with a syntax error",
        "run",
        "--workdir {w} {data} --config.model=net:Net",
        ("net.py, line 1",),
        setup=write("net.py", "class Net(:\n"),
    ),
    Case(
        "model that is not a Linen or NNX module",
        "run",
        "--workdir {w} {data} --config.model=net:Net",
        ("not a flax.linen.Module or flax.nnx.Module class",),
        setup=write("net.py", "class Net:\n    pass\n"),
    ),
    Case(
        "model_kwargs the model does not accept",
        "run",
        '--workdir {w} {data} --config.model_kwargs={{"widht":3}}',
        ("model 'seed_cnn' does not accept", "widht"),
    ),
    Case(
        "model_kwargs that are not a JSON object",
        "run",
        "--workdir {w} {data} --config.model_kwargs=[1]",
        ("expected a JSON object",),
    ),
    Case(
        "model returning logits of the wrong shape",
        "run",
        "--workdir {w} {data} --config.model=net:Net",
        ("returns float32[2, 784]", "[2, 10]"),
        setup=write(
            "net.py",
            "import flax.linen as nn\n\n\nclass Net(nn.Module):\n    num_classes: int\n\n"
            "    @nn.compact\n    def __call__(self, x, train=False):\n"
            "        return nn.Dense(1)(x).reshape(x.shape[0], -1)\n",
        ),
    ),
    Case(
        "model that cannot take the data's images",
        "run",
        "--workdir {w} {data} --config.model=net:Net",
        ("cannot take this data's images, uint8[B, 28, 28, 1]",),
        setup=write(
            "net.py",
            "import flax.linen as nn\n\n\nclass Net(nn.Module):\n    num_classes: int\n\n"
            "    @nn.compact\n    def __call__(self, x, train=False):\n"
            "        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], 32 * 32 * 3))\n",
        ),
    ),
    Case(
        "unknown tfds dataset",
        "run",
        "--workdir {w} {data} --config.dataset=no_such_dataset_xyz",
        ("dataset 'no_such_dataset_xyz' is not a tfds dataset",),
    ),
    # The workdir.
    Case("empty workdir path", "run", "--workdir= {data}", ("--workdir is empty",)),
    Case(
        "workdir with an unexpanded ~",
        "run",
        "--workdir=~/fashion_jax_runs/x {data} --config.batch_size=0",
        ("starts with '~'", "$HOME"),
    ),
    Case(
        "workdir name longer than 255 bytes",
        "run",
        "--workdir {tmp}/" + "x" * 300 + " {data}",
        ("300 bytes long", "at most 255"),
    ),
    Case(
        "workdir path with brackets",
        "run",
        "--workdir {tmp}/run[1] {data}",
        ("contains '[' or ']'",),
    ),
    Case(
        "workdir is a file",
        "run",
        "--workdir {tmp}/f {data}",
        ("is a file, not a folder",),
        setup=write("@f", "x"),
    ),
    Case(
        "unwritable workdir",
        "run",
        "--workdir /proc/fashion_jax_run {data}",
        ("Cannot write to --workdir",),
    ),
    Case(
        "foreign workdir",
        "run",
        "--workdir {w} {data}",
        ("no config.json", "--restart"),
        setup=write("metrics.jsonl", "{}\n"),
    ),
    Case(
        "checkpoints is a file",
        "run",
        "--workdir {w} {data}",
        ("checkpoints is a file",),
        setup=write("checkpoints", "x"),
    ),
    Case(
        "summary.json is a folder",
        "run",
        "--workdir {w} {data}",
        ("summary.json is a folder",),
        setup=replace_by_folder("summary.json"),
        trained=True,
    ),
    Case(
        "metrics.jsonl is a folder",
        "run",
        "--workdir {w} {data}",
        ("metrics.jsonl is a folder",),
        setup=replace_by_folder("metrics.jsonl"),
        trained=True,
    ),
    Case(
        ".lock is a folder",
        "run",
        "--workdir {w} {data}",
        (".lock is a folder",),
        setup=replace_by_folder(".lock"),
    ),
    Case(
        "report.md is a folder",
        "run",
        "--workdir {w} {data}",
        ("report.md is a folder",),
        setup=replace_by_folder("report.md"),
        trained=True,
    ),
    Case(
        "sweep.json is a folder",
        "sweep",
        "--workdir {w} --seeds 0 {data}",
        ("sweep.json is a folder",),
        setup=replace_by_folder("sweep.json"),
    ),
    Case(
        "garbage config.json",
        "run",
        "--workdir {w} {data}",
        ("is not a fashion_jax config",),
        setup=write("config.json", "{nope"),
        trained=True,
    ),
    Case(
        "workdir in use by another runner",
        "run",
        "--workdir {w} {data}",
        ("is in use by pid",),
        setup=hold_lock,
        trained=True,
    ),
    # Resuming with keys that define the training.
    Case(
        "resume with another model",
        "run",
        "--workdir {w} {data} --config.model=fast_cnn",
        ("model: 'seed_cnn' -> 'fast_cnn'", "cannot be resumed"),
        trained=True,
    ),
    Case(
        "resume with other model_kwargs",
        "run",
        '--workdir {w} {data} --config.model_kwargs={{"hidden":32}}',
        ("model_kwargs: {} -> {'hidden': 32}", "cannot be resumed"),
        trained=True,
    ),
    Case(
        "resume with other data",
        "run",
        "--workdir {w} {data} --config.max_train_examples=320",
        ("max_train_examples: 0 -> 320",),
        trained=True,
    ),
    Case(
        "resume with another seed",
        "run",
        "--workdir {w} {data} --config.seed=1",
        ("seed: 0 -> 1",),
        trained=True,
    ),
    Case(
        "resume with fewer epochs than trained",
        "run",
        "--workdir {w} {data} --config.num_epochs=1",
        ("trained for 40 steps", "num_epochs = 1"),
        trained=True,
    ),
    # The data.
    Case(
        "no dataset and no download",
        "run",
        "--workdir {w} --config.data_dir={tmp}/tfds --config.idx_dir={tmp}/idx --config.download=false",
        ("Fashion-MNIST", "does not hold all four files", "apt-get install dataset-fashion-mnist"),
        setup=write("@idx/README", "empty"),
    ),
    Case(
        "IDX file that is not gzip",
        "run",
        "--workdir {w} --config.data_dir={tmp}/tfds --config.idx_dir={tmp}/idx --config.download=false",
        ("train-labels-idx1-ubyte.gz", "corrupt or truncated"),
        setup=lambda w, tmp: garbage_labels_idx(tmp / "idx"),
    ),
    Case(
        "truncated IDX file",
        "run",
        "--workdir {w} --config.data_dir={tmp}/tfds --config.idx_dir={tmp}/idx --config.download=false",
        ("idx",),
        setup=lambda w, tmp: truncated_idx(tmp / "idx"),
    ),
    Case(
        "data_dir is a file",
        "run",
        "--workdir {w} --config.data_dir={tmp}/f --config.idx_dir={tmp}/idx --config.download=false",
        ("data_dir", "is a file, not a folder"),
        setup=write("@f", "x"),
    ),
    Case(
        "IDX file with a valid header and no items",
        "run",
        "--workdir {w} --config.data_dir={tmp}/tfds --config.idx_dir={tmp}/idx --config.download=false",
        ("train-images-idx3-ubyte.gz holds no examples",),
        setup=lambda w, tmp: empty_idx(tmp / "idx"),
    ),
    # predict.
    Case("predict without a run", "predict", "--workdir {w}", ("has no config.json",)),
    Case(
        "predict on a garbage config.json",
        "predict",
        "--workdir {w}",
        ("is not a readable fashion_jax config",),
        setup=write("config.json", "[1, 2"),
        trained=True,
    ),
    Case(
        "predict an index out of range",
        "predict",
        "--workdir {w} --index 200",
        ("--index 200 is out of range",),
        trained=True,
    ),
    Case(
        "predict a file that is not an image",
        "predict",
        "--workdir {w} {tmp}/x.png",
        ("is not an image",),
        setup=write("@x.png", "hello"),
        trained=True,
    ),
    Case(
        "predict a decompression bomb",
        "predict",
        "--workdir {w} {tmp}/big.png",
        ("too large to open safely",),
        setup=write("@big.png", huge_png()),
        trained=True,
    ),
    Case(
        "predict into a missing folder",
        "predict",
        "--workdir {w} --output {tmp}/no/such/p.png",
        ("does not exist",),
        trained=True,
    ),
    Case(
        "predict output that is not a PNG",
        "predict",
        "--workdir {w} --output {tmp}/p.jpg",
        ("must end in .png",),
        trained=True,
    ),
    Case(
        "a prediction figure is a folder",
        "predict",
        "--workdir {w} --index 3",
        ("test_3.png is a folder",),
        setup=replace_by_folder("predictions/test_3.png"),
        trained=True,
    ),
    Case(
        "predict --output with several indices",
        "predict",
        "--workdir {w} --index 1 --index 2 --output {tmp}/p.png",
        ("--output names one figure, but this call draws 2",),
        trained=True,
    ),
    Case(
        "predict --output with an index and an image file",
        "predict",
        "--workdir {w} --index 1 --output {tmp}/p.png {tmp}/a.png",
        ("--output names one figure, but this call draws 2",),
        trained=True,
    ),
    Case(
        "predictions is a file",
        "predict",
        "--workdir {w}",
        ("predictions is a file",),
        setup=write("predictions", "x"),
        trained=True,
    ),
    # report.
    Case("report on a missing workdir", "report", "--workdir {tmp}/none", ("does not exist",)),
    Case(
        "report on an empty workdir",
        "report",
        "--workdir {w}",
        ("no config.json",),
        setup=lambda w, tmp: None,
    ),
    Case(
        "report on a garbage config.json",
        "report",
        "--workdir {w}",
        ("is not a readable fashion_jax config",),
        setup=write("config.json", "null"),
        trained=True,
    ),
    Case(
        "a plot is a folder",
        "report",
        "--workdir {w}",
        ("curves.png is a folder",),
        setup=replace_by_folder("plots/curves.png"),
        trained=True,
    ),
    Case(
        "report.md is a folder for the report",
        "report",
        "--workdir {w}",
        ("report.md is a folder",),
        setup=replace_by_folder("report.md"),
        trained=True,
    ),
    Case(
        "plots is a file",
        "report",
        "--workdir {w}",
        ("plots is a file",),
        setup=replace_by_file("plots"),
        trained=True,
    ),
    Case(
        "compare a workdir without metrics",
        "report",
        "--compare {w}",
        ("has no metrics.jsonl",),
        setup=lambda w, tmp: None,
    ),
    # export.
    Case("export without a run", "export", "--workdir {w}", ("has no config.json",)),
    Case(
        "export an unknown format",
        "export",
        "--workdir {w} --format onnx,tflite",
        ("unknown format 'tflite'", "onnx,saved_model,stablehlo"),
        trained=True,
    ),
    Case(
        "export into a file",
        "export",
        "--workdir {w} --output {tmp}/f",
        ("is a file, not a folder",),
        setup=write("@f", "x"),
        trained=True,
    ),
    Case(
        "export folder of the workdir is a file",
        "export",
        "--workdir {w} --format stablehlo",
        ("export is a file, not a folder",),
        setup=write("export", "x"),
        trained=True,
    ),
    Case(
        "export into an unwritable folder",
        "export",
        "--workdir {w} --output /proc/fashion_jax_export",
        ("cannot write to --output /proc/fashion_jax_export",),
        trained=True,
    ),
]


def empty_idx(folder: Path):
    from conftest import write_idx

    write_idx(folder, train_n=0, test_n=16)


def garbage_labels_idx(folder: Path):
    from conftest import write_idx

    write_idx(folder, train_n=64, test_n=16)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")


def truncated_idx(folder: Path):
    from conftest import write_idx

    write_idx(folder, train_n=64, test_n=16)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_idx, tiny_tfds):
    """A finished two-epoch tiny run (40 steps), trained in process once for the module."""
    from fashion_jax import run

    w = tmp_path_factory.mktemp("trained") / "w"
    assert run.main(["--workdir", str(w), *runner_args(tiny_idx, tiny_tfds)]) == 0
    return w


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clean_error_and_loses_nothing(
    case, tmp_path, tiny_idx, tiny_tfds, capsys, request
):
    from fashion_jax import export, predict, report, run, sweep

    w, tmp = tmp_path / "w", tmp_path / "scratch"
    tmp.mkdir()
    if case.trained:
        shutil.copytree(request.getfixturevalue("trained_run"), w)
    if case.setup:
        w.mkdir(exist_ok=True)
        case.setup(w, tmp)
    before = fingerprint(w) if w.exists() else {}
    data = " ".join(runner_args(tiny_idx, tiny_tfds))
    argv = case.args.format(w=w, tmp=tmp, data=data).split()
    capsys.readouterr()
    try:
        status = {
            "run": run.main,
            "predict": predict.main,
            "report": report.main,
            "sweep": sweep.main,
            "export": export.main,
        }[case.tool](argv)
    finally:
        while HELD:
            HELD.pop().__exit__(None, None, None)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert err.count("error:") == 1, err
    for fragment in case.fragments:
        assert fragment in err, (fragment, err)
    if w.exists():
        assert fingerprint(w) == before  # Nothing written, moved or deleted.


def test_every_kind_of_input_has_cases():
    assert {c.tool for c in CASES} == {"run", "predict", "report", "sweep", "export"}
    assert len(CASES) >= 45


def test_every_file_a_run_writes_is_checked_before_writing(trained_run):
    """workdir.FILES/FOLDERS name every output of a run and its report (their kinds are checked)."""
    from fashion_jax import workdir

    top = {p.relative_to(trained_run).parts[0] for p in trained_run.iterdir()}
    files = {
        str(p.relative_to(trained_run))
        for p in trained_run.rglob("*")
        if p.is_file()
        and p.relative_to(trained_run).parts[0] not in workdir.FOLDERS[:2] + (workdir.TENSORBOARD,)
    }
    assert top <= set(workdir.FILES) | set(workdir.FOLDERS), top
    assert files <= set(workdir.FILES), files - set(workdir.FILES)
    assert len(files) >= 9  # config.json, metrics.jsonl, summary.json, report.md, .lock, 5 plots.


def test_a_full_disk_during_training_is_one_error_line(
    tmp_path, tiny_idx, tiny_tfds, capsys, monkeypatch
):
    """Saves that fail with ENOSPC (as from a full disk) end in one line, not five tracebacks."""
    import errno

    from fashion_jax import checkpoints, run

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "w" / "checkpoints"))

    monkeypatch.setattr(checkpoints.Checkpoints, "save", full)
    status = run.main(["--workdir", str(tmp_path / "w"), *runner_args(tiny_idx, tiny_tfds)])
    err = capsys.readouterr().err
    assert (
        status == 2
        and err.startswith("error: cannot write (No space left on device")
        and "Traceback" not in err
    )


def test_a_corrupt_gzip_stays_a_clean_error(tmp_path):
    """The IDX reader's own check, without the runner around it."""
    from fashion_jax import data
    from fashion_jax.errors import DataError

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0" * 10))
    with pytest.raises(DataError):
        data.read_idx(tmp_path, "train")
