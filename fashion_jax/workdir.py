"""A run's folder: its file names, the checks before training in it, its lock, and reading it back.

    WORKDIR/
      config.py           the experiment (optional; yours)
      config.json         the resolved config the run was started with (written by the runner)
      dataset.json        the data's image shape, number of classes, class names, background
                          colour and fingerprint (fingerprints.data)
      model.json          the model's code and parameter structure (fingerprints.code, .params)
      metrics.jsonl       one JSON record per log step ("train") and per epoch ("eval")
      summary.json        the final numbers, written when the run finishes
      checkpoints/<step>/ Orbax checkpoints; damaged ones are moved to checkpoints_invalid/
      tensorboard/        TensorBoard events
      plots/, report.md   figures and the Markdown report (fashion_jax.report)
      predictions/        figures written by fashion_jax.predict
      .lock               held by the one runner training in this folder

Trainers go through `create`, `check_previous` and `Lock`; readers (`load_config`, and
`trained.load_trained`) never write.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import ml_collections

from fashion_jax import config as config_lib
from fashion_jax.errors import CheckpointError, ConfigError, UserError

CONFIG_FILE = "config.py"
CONFIG_JSON = "config.json"
DATASET_JSON = "dataset.json"
MODEL_JSON = "model.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
INVALID_CHECKPOINTS = "checkpoints_invalid"
TENSORBOARD = "tensorboard"
PLOTS = "plots"
REPORT = "report.md"
PREDICTIONS = "predictions"
LOCK = ".lock"

# What a run writes; `--restart` moves these aside. Folders among them must be folders.
OUTPUTS = (
    CONFIG_JSON,
    DATASET_JSON,
    MODEL_JSON,
    METRICS,
    SUMMARY,
    CHECKPOINTS,
    INVALID_CHECKPOINTS,
    PLOTS,
    REPORT,
    TENSORBOARD,
    PREDICTIONS,
)
FOLDERS = (CHECKPOINTS, INVALID_CHECKPOINTS, PLOTS, TENSORBOARD, PREDICTIONS)
# Every file the runner and the report write, relative to the workdir (predictions are named per
# image; `check_kinds` takes those too). Each must be a file, or absent, before anything is written.
PLOT_FILES = tuple(
    f"{PLOTS}/{name}"
    for name in (
        "curves.png",
        "confusion_matrix.png",
        "confusion_matrix.json",
        "per_class_accuracy.png",
        "samples.png",
    )
)
FILES = (CONFIG_JSON, DATASET_JSON, MODEL_JSON, METRICS, SUMMARY, REPORT, LOCK, *PLOT_FILES)


def check_kinds(files=(), folders=(), fix: str = "Move it away and rerun.") -> None:
    """Raises UserError if a path in `files` exists but is not a file (a folder, say), or a path in
    `folders` exists but is not a folder: the one check of every path fashion_jax writes."""
    for path in map(Path, files):
        if path.exists() and not path.is_file():
            raise UserError(f"{path} is a folder, but a file is written there. {fix}")
    for path in map(Path, folders):
        if path.exists() and not path.is_dir():
            raise UserError(f"{path} is a file, but the runner writes a folder there. {fix}")


def check_outputs(workdir: Path, fix: str = "Move it away and rerun.") -> None:
    """`check_kinds` for every output path of a run in `workdir` (see FILES and FOLDERS)."""
    check_kinds([workdir / name for name in FILES], [workdir / name for name in FOLDERS], fix=fix)


def check_path(workdir: str | os.PathLike) -> Path:
    """`workdir` as a Path; refuses an empty string (which would mean the current folder)."""
    if not str(workdir).strip():
        raise UserError(
            "--workdir is empty. Give the run's folder, e.g. --workdir experiments/base."
        )
    path = Path(workdir)
    if path.parts and path.parts[0].startswith("~"):
        raise UserError(
            f"--workdir {workdir} starts with '~', which the shell leaves as is after '=': write "
            f"--workdir {workdir} (with a space) or use $HOME, so it does not make a folder named "
            f"'{path.parts[0]}'."
        )
    if set("[]") & set(str(path.absolute())):
        raise UserError(
            f"--workdir {path.absolute()} contains '[' or ']': Orbax reads checkpoint paths as glob "
            "patterns, so checkpoints saved there could not be read back. Choose a path without "
            "brackets."
        )
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise UserError(
                f"--workdir: the name '{part[:40]}...' is {len(os.fsencode(part))} bytes long; file "
                "systems allow at most 255 bytes per name. Choose a shorter name."
            )
    return path


def check_exists(workdir: Path) -> None:
    """Raises ReportError unless `workdir` is an existing folder (for tools that only read it)."""
    from fashion_jax.errors import ReportError

    if not workdir.exists():
        raise ReportError(
            f"--workdir {workdir} does not exist. Give the folder a run wrote "
            f"(`python -m fashion_jax.run --workdir {workdir}`)."
        )
    if not workdir.is_dir():
        raise ReportError(f"--workdir {workdir} is a file, not a run's folder.")


def read_json(path: Path) -> dict | None:
    """The JSON object in `path` (e.g. summary.json), or None when it is missing, unreadable or
    not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def load_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was started with (its config.json), checked against the schema."""
    workdir = check_path(workdir)
    path = workdir / CONFIG_JSON
    if not path.is_file():
        raise CheckpointError(
            f"{workdir} has no {CONFIG_JSON}: it holds no run. Train first with "
            f"`python -m fashion_jax.run --workdir {workdir}`."
        )
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        return config_lib.check_schema(ml_collections.ConfigDict(saved), source=str(path))
    except (OSError, ValueError, UnicodeDecodeError, ConfigError) as e:
        raise CheckpointError(
            f"{path} is not a readable fashion_jax config ({str(e).splitlines()[0][:200]}). "
            "Use another --workdir, or retrain with --restart."
        ) from None


def write_dataset_info(workdir: Path, info, data: dict | None = None) -> None:
    """Writes `info` (a data.DatasetInfo) to WORKDIR/dataset.json, with `data` (a
    `fingerprints.data` record: the splits' fingerprint and the background colour) when given."""
    record = {
        "image_shape": list(info.image_shape),
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        **(data or {}),
    }
    (Path(workdir) / DATASET_JSON).write_text(json.dumps(record, indent=2) + "\n")


def check_data(workdir: Path, data: dict) -> None:
    """Refuses to resume the run in `workdir` on other data than its dataset.json records: other
    classes or image shape, other split shapes or dtypes, other values (`data` is the
    `fingerprints.data` record of the data at hand). Nothing to compare without a previous run
    or a dataset.json; one older than the fingerprint compares classes and image shape only."""
    from fashion_jax import fingerprints

    recorded = read_json(Path(workdir) / DATASET_JSON)
    if recorded is None or not (Path(workdir) / CONFIG_JSON).is_file():
        return
    differences = fingerprints.data_differences(recorded, data)
    if differences:
        raise CheckpointError(
            f"the run in {workdir} was trained on other data ({'; '.join(differences)}): "
            "resuming it on this data would mix two trainings. Pass the data it was trained on, "
            "use another workdir, or pass --restart (restart=True in train_and_evaluate) to start "
            "afresh (the old outputs are moved to a backup folder, not deleted)."
        )


def read_dataset_info(workdir: str | os.PathLike):
    """The data.DatasetInfo in WORKDIR/dataset.json, or None when there is none (older runs)."""
    from fashion_jax.data import DatasetInfo

    path = Path(workdir) / DATASET_JSON
    try:
        record = json.loads(path.read_text())
        return DatasetInfo(
            tuple(int(n) for n in record["image_shape"]),
            int(record["num_classes"]),
            tuple(str(n) for n in record["class_names"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_model_info(workdir: str | os.PathLike) -> dict | None:
    """The record in WORKDIR/model.json (see `write_model_info`), or None when there is none (runs
    older than it) or it is unreadable."""
    return read_json(Path(workdir) / MODEL_JSON)


def write_model_info(workdir: Path, config, code: dict, params: dict, step: int) -> None:
    """Records what the model of the run in `workdir` is: {"model", "code" (fingerprints.code),
    "params" (fingerprints.params), "changes"}. `changes` lists, with the step, each time the run
    went on with other code (`continue_with_changed_code`); earlier entries are kept."""
    previous = read_model_info(workdir) or {}
    changes = list(previous.get("changes", []))
    if "code" in previous and previous["code"] != code:
        changes.append({"step": step, "from": previous["code"], "to": code})
    record = {"model": config.model, "code": code, "params": params, "changes": changes}
    (Path(workdir) / MODEL_JSON).write_text(json.dumps(record, indent=2) + "\n")


def check_code(workdir: Path, config) -> None:
    """Refuses to resume the run in `workdir` with model code other than the code recorded in its
    model.json (an edited net.py, a file it imports, another fashion_jax version for a built-in
    model), unless `config.continue_with_changed_code`. Runs older than model.json pass."""
    from fashion_jax import fingerprints

    recorded = read_model_info(workdir)
    if not isinstance(recorded, dict) or not isinstance(recorded.get("code"), dict):
        return
    changes = fingerprints.code_differences(
        recorded["code"], fingerprints.code(config, (str(workdir),))
    )
    if not changes:
        return
    if config.continue_with_changed_code:
        print(
            f"note: continuing the run in {workdir} with changed model code ({'; '.join(changes)}), "
            "as continue_with_changed_code asks (model.json and config.json record it).",
            flush=True,
        )
        return
    raise CheckpointError(
        f"the model's code changed since the run in {workdir} was trained ({'; '.join(changes)}): "
        f"resuming would train the edited {config.model} on the old weights. Pass --restart to "
        "train it afresh (the old outputs are moved to a backup folder), or "
        "--config.continue_with_changed_code=true to continue the trained weights with the "
        "edited code on purpose (recorded in the run's config)."
    )


def create(workdir: Path) -> None:
    """Creates `workdir` if needed; raises UserError if a file is in the way or it is not writable."""
    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"--workdir {workdir} is a file, not a folder. Choose a folder path.")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(
            f"Cannot write to --workdir {workdir} ({e.strerror or e}). "
            "Choose a folder you can write to, or fix its permissions."
        ) from None


def check_previous(workdir: Path, config, restart: bool, is_main: bool) -> None:
    """Refuses a foreign workdir or a previous run that `config` cannot continue; honours --restart.

    Raises UserError subclasses: files not written by this runner, an output folder that is a
    file, or a previous run whose config differs in a key that defines the training (see
    `config.check_resume`). With `restart`, the previous outputs move to `backup-<time>/`.
    """
    # An empty folder holds no run: the runner makes checkpoints/ a moment before it writes
    # config.json, and an interruption in between must leave a workdir the rerun accepts.
    present = [
        name
        for name in OUTPUTS
        if (workdir / name).exists()
        and not ((workdir / name).is_dir() and not any((workdir / name).iterdir()))
    ]
    if restart and present:
        if is_main:
            backup = backup_folder(workdir, time.strftime("backup-%Y%m%d-%H%M%S"))
            for name in present:
                shutil.move(str(workdir / name), str(backup / name))
            print(f"--restart: moved {', '.join(present)} to {backup}", flush=True)
        return
    check_outputs(
        workdir, "Move it away, or pass --restart to move the old outputs to a backup folder."
    )
    if not present:
        return
    if not (workdir / CONFIG_JSON).is_file():
        raise CheckpointError(
            f"{workdir} holds {', '.join(present)} but no {CONFIG_JSON}: it was not written by this runner "
            "or is incomplete. Use another --workdir, or --restart to move those files aside."
        )
    try:
        previous = load_config(workdir)
    except CheckpointError:
        raise CheckpointError(
            f"{workdir / CONFIG_JSON} is not a fashion_jax config. Use another --workdir, "
            "or --restart to move the old files aside."
        ) from None
    config_lib.check_resume(previous, config, workdir)
    check_code(workdir, config)


def backup_folder(workdir: Path, name: str) -> Path:
    """Creates and returns WORKDIR/`name`, or `name`-2, -3, ... when it exists: a second --restart
    within the same second must not move its outputs onto (or into) the first one's."""
    for n in range(1, 10_000):
        backup = workdir / (name if n == 1 else f"{name}-{n}")
        try:
            backup.mkdir()
            return backup
        except FileExistsError:
            continue
    raise UserError(f"{workdir} holds too many {name}* folders; move some away.")


def identity(workdir: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder `workdir` names now, or None if it names nothing."""
    try:
        st = os.stat(workdir)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_unmoved(workdir: Path, expected: tuple[int, int] | None) -> None:
    """Raises UserError if `workdir` no longer names the folder a run started in (`identity` then):
    deleted, moved or renamed mid-run. Writing on would split the run between two folders."""
    if identity(workdir) != expected:
        raise UserError(
            f"{workdir} was deleted, moved or renamed while this run trained in it; the run "
            "stopped so it does not continue in two places. Put the folder back (or give its new "
            "path as --workdir) and rerun the same command: it resumes from its last checkpoint."
        )


class Lock:
    """An exclusive lock on a workdir for one training process: `with Lock(workdir): ...`.

    Uses `fcntl.flock` on `WORKDIR/.lock`, so the operating system frees it when its holder dies
    (kill -9 included): a stale lock never blocks the next run. A second trainer is refused with the
    holder's pid and host. Readers (predict, report) take no lock.
    """

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / LOCK
        self._file = None

    def __enter__(self) -> Lock:
        import fcntl
        import socket

        check_kinds([self.path])
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise UserError(
                f"{self.path.parent} is in use by {holder}: one runner trains in a workdir at a "
                "time. Wait for it to finish (or stop it), or use another --workdir."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # Closing releases the flock.
            self._file = None
