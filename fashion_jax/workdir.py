"""A run's folder: its file names, the checks before training in it, its lock, and reading it back.

    WORKDIR/
      config.py           the experiment (optional; yours)
      config.json         the resolved config the run was started with (written by the runner)
      metrics.jsonl       one JSON record per log step ("train") and per epoch ("eval")
      summary.json        the final numbers, written when the run finishes
      checkpoints/<step>/ Orbax checkpoints; damaged ones are moved to checkpoints_invalid/
      tensorboard/        TensorBoard events
      plots/, report.md   figures and the Markdown report (fashion_jax.report)
      predictions/        figures written by fashion_jax.predict
      .lock               held by the one runner training in this folder

Trainers go through `prepare` and `Lock`; readers (`load_config`, `load_trained`) never write.
"""

from __future__ import annotations

import functools
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


def check_path(workdir: str | os.PathLike) -> Path:
    """`workdir` as a Path; refuses an empty string (which would mean the current folder)."""
    if not str(workdir).strip():
        raise UserError(
            "--workdir is empty. Give the run's folder, e.g. --workdir experiments/base."
        )
    return Path(workdir)


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
    present = [name for name in OUTPUTS if (workdir / name).exists()]
    if restart and present:
        if is_main:
            backup = workdir / time.strftime("backup-%Y%m%d-%H%M%S")
            backup.mkdir(exist_ok=True)
            for name in present:
                shutil.move(str(workdir / name), str(backup / name))
            print(f"--restart: moved {', '.join(present)} to {backup}", flush=True)
        return
    for name in FOLDERS:
        if (workdir / name).exists() and not (workdir / name).is_dir():
            raise UserError(
                f"{workdir / name} is a file, but the runner writes a folder there. "
                "Move it away, or pass --restart to move the old outputs to a backup folder."
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


def load_trained(workdir: str | os.PathLike):
    """(config, state): a workdir's config and its newest valid checkpoint, on this process' devices.

    Read-only: safe beside a running trainer. Raises CheckpointError when the workdir holds no run
    or no readable checkpoint. The state's params are float32 pytrees; `state.apply_fn` is the model.
    """
    import jax

    from fashion_jax import checkpoints, sharding, steps

    workdir = check_path(workdir)
    config = load_config(workdir)
    if not (workdir / CHECKPOINTS).is_dir():
        raise CheckpointError(f"{workdir} has no checkpoints yet: train first.")
    repl = sharding.replicated(sharding.make_mesh())
    # Shapes only: the schedule's length does not change the optimizer state's structure.
    init = functools.partial(steps.create_train_state, config=config, total_steps=1 << 20)
    abstract = checkpoints.abstract_like(init, jax.random.key(0), repl)
    ckpt = checkpoints.Checkpoints(
        workdir, config.keep_checkpoints, config_lib.state_structure(config), read_only=True
    )
    try:
        restored = ckpt.restore_latest(abstract)
    finally:
        ckpt.close()
    if restored is None:
        raise CheckpointError(f"{workdir}/{CHECKPOINTS} holds no readable checkpoint: train first.")
    return config, restored[0]
