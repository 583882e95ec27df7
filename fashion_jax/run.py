"""The runner's command line: `python -m fashion_jax.run --workdir experiments/base [--config.KEY=VALUE ...]`.

Loads `WORKDIR/config.py` (or `--config FILE`, or the defaults), applies overrides, validates,
joins `jax.distributed` if asked, and calls `fashion_jax.train.train_and_evaluate`. User errors
print one `error:` line and exit 2; a preemption (SIGTERM/SIGINT) saves and exits 128 + signal.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from fashion_jax import config as config_lib
from fashion_jax import sharding, supervisor
from fashion_jax.errors import ConfigError, UserError
from fashion_jax.preemption import Preempted


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Separates `--config.KEY=VALUE` (or `--config.KEY VALUE`) overrides from the other flags."""
    overrides: dict[str, str] = {}
    rest = []
    args_iter = iter(argv)
    for arg in args_iter:
        if arg.startswith("--config."):
            key, sep, value = arg[len("--config.") :].partition("=")
            if not sep:
                value = next(args_iter, None)
                if value is None:
                    raise ConfigError(f"{arg} needs a value: --config.{key}=VALUE.")
            overrides[key] = value
        else:
            rest.append(arg)
    return rest, overrides


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    """Splits argv into known flags and `--config.KEY=VALUE` overrides."""
    parser = argparse.ArgumentParser(
        prog="python -m fashion_jax.run",
        description="Train and evaluate a Fashion-MNIST classifier in WORKDIR (resumes if it holds a run).",
        epilog="Override any config value with --config.KEY=VALUE, e.g. --config.num_epochs=2.",
    )
    parser.add_argument(
        "--workdir", required=True, help="output folder; WORKDIR/config.py is the config if present"
    )
    parser.add_argument(
        "--config", default=None, help="experiment config file (default: WORKDIR/config.py)"
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start afresh: move the workdir's previous outputs into a backup folder first",
    )
    rest, overrides = split_overrides(argv)
    return parser.parse_args(rest), overrides


def resolve_config(workdir: str, config_file: str | None, overrides: dict[str, str]):
    """The experiment config (file, else WORKDIR/config.py, else defaults) with overrides, validated."""
    from fashion_jax.workdir import CONFIG_FILE, check_path

    path = Path(config_file) if config_file else check_path(workdir) / CONFIG_FILE
    if config_file or path.is_file():
        cfg = config_lib.load_experiment(path)
    else:
        print(_defaults_note(path), flush=True)
        cfg = config_lib.get_config()
    cfg = config_lib.apply_overrides(cfg, overrides)
    if config_file or path.is_file():  # A model set by an override lives beside the config too.
        cfg = config_lib.with_model_dir(cfg, path.parent)
    return config_lib.validate(cfg)


def _defaults_note(path: Path) -> str:
    """The one line saying a run trains the defaults because `path` (WORKDIR/config.py) is absent,
    naming a sibling experiment with a close name (a misspelt one) when there is one."""
    import difflib

    workdir = path.parent
    hint = ""
    try:
        siblings = [p.name for p in workdir.parent.iterdir() if (p / path.name).is_file()]
    except OSError:
        siblings = []
    close = difflib.get_close_matches(workdir.name, siblings, n=1, cutoff=0.75)
    if close and close[0] != workdir.name:
        hint = f" Did you mean --workdir {workdir.parent / close[0]}?"
    return (
        f"note: {path} does not exist, so this run trains the defaults of "
        f"fashion_jax.config.get_config() with your overrides.{hint} The recipes are "
        "experiments/<name>/config.py in the fashion_jax source tree; or pass --config FILE."
    )


def _disk_error(error: BaseException) -> OSError | None:
    """The full-disk / quota / read-only / permission OSError behind `error` (Orbax and TensorStore
    wrap them), or None."""
    import errno

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (
            errno.ENOSPC,
            errno.EDQUOT,
            errno.EROFS,
            errno.EACCES,
        ):
            return error
        if _full_disk_text(str(error)):  # TensorStore: ValueError RESOURCE_EXHAUSTED ... OCDBT.
            return OSError(errno.ENOSPC, "No space left on device")
        error = error.__cause__ or error.__context__
    return None


def _full_disk_text(text: str) -> bool:
    return "RESOURCE_EXHAUSTED" in text or "No space left on device" in text


def _is_full_disk(exc: BaseException | None) -> bool:
    import errno

    return exc is not None and (
        (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))
        or _full_disk_text(str(exc))
        or _is_full_disk(exc.__cause__ or exc.__context__)
    )


class _DropFullDiskRecords(logging.Filter):
    """Drops the storage threads' own reports of a full disk (a traceback each): the command
    reports it once, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (_is_full_disk(exc) or _full_disk_text(record.getMessage()))


_FULL_DISK_REPORTED = False


def _leftover(exc, tb) -> bool:
    """A storage thread's leftover report that the command's own message already covers:
    TensorStore resolving a write's asyncio future after Orbax closed that event loop (a save
    that failed, on a full disk, leaves writes in flight: `RuntimeError: Event loop is closed`
    from `call_soon_threadsafe`, printed by native code; the save already failed and is
    reported), and after a full disk was reported, its echoes and TensorBoard's flushes."""
    import traceback

    frames = traceback.extract_tb(tb) if tb is not None else []
    if (
        isinstance(exc, RuntimeError)
        and str(exc) == "Event loop is closed"
        and any(f.name == "call_soon_threadsafe" and "asyncio" in f.filename for f in frames)
    ):
        return True
    return _FULL_DISK_REPORTED and (
        _is_full_disk(exc)
        or (isinstance(exc, OSError) and any("tensorboardX" in f.filename for f in frames))
    )


def _peer_lost(exc) -> bool:
    """In a watched distributed child, prints the line its parent turns into the run's one error
    line when `exc` is a failed collective (`supervisor.collective_failed`); else False."""
    line = supervisor.collective_failed(exc)
    if line is not None:
        print(line, file=sys.stderr, flush=True)
    return line is not None


def _quiet_leftovers() -> None:
    """Keeps storage threads' leftover reports (`_leftover`: TensorBoard's flush at exit and its
    worker thread after a full disk, TensorStore's late callbacks) from printing tracebacks, on
    every channel Python offers (uncaught in a thread, unraisable, printed by native code through
    `sys.excepthook`), and reports a failed collective there as `guarded` does; other errors still
    print. Installed once per process."""
    import threading

    if getattr(sys.excepthook, "fashion_jax", False):
        return
    previous_unraisable, previous_thread = sys.unraisablehook, threading.excepthook
    previous_except = sys.excepthook

    # A collective can also fail in a storage thread (Orbax's barriers).
    handled = lambda exc, tb: _leftover(exc, tb) or _peer_lost(exc)

    def excepthook(kind, value, tb):
        if not handled(value, tb):
            previous_except(kind, value, tb)

    excepthook.fashion_jax = True
    sys.excepthook = excepthook
    sys.unraisablehook = lambda u: (
        None if handled(u.exc_value, u.exc_traceback) else previous_unraisable(u)
    )
    threading.excepthook = lambda a: (
        None if handled(a.exc_value, a.exc_traceback) else previous_thread(a)
    )


def guarded(body, command: str, where: dict[str, str]) -> int:
    """Runs `body()` (which returns the exit status) the way every training command ends: a
    preemption prints how to resume and returns 128 + signal; a user error or a full disk prints
    one `error:` line and returns 2. `command` is the command line that resumes; `body` puts the
    workdir it trains in into `where["workdir"]` as soon as it knows it."""
    global _FULL_DISK_REPORTED
    quiet = _DropFullDiskRecords()
    logging.getLogger("absl").addFilter(quiet)
    _quiet_leftovers()
    try:
        return body()
    except Preempted as p:
        name = signal.Signals(p.signum).name
        done = (
            f"saved the checkpoint at step {p.step} in {where.get('workdir', 'WORKDIR')}/checkpoints"
            if p.saved
            else f"stopped before training (at step {p.step}), nothing new to save"
        )
        print(
            f"\n{name} received: {done}. Resume with the same command: {command}",
            file=sys.stderr,
            flush=True,
        )
        return 128 + p.signum
    except KeyboardInterrupt:  # Ctrl-C before the run's own handler was installed.
        print(
            f"\nSIGINT received before training started. Start again with: {command}",
            file=sys.stderr,
            flush=True,
        )
        return 128 + signal.SIGINT
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except Exception as e:
        if _peer_lost(e):
            return 2
        disk = _disk_error(e)
        if disk is None:
            raise
        _FULL_DISK_REPORTED = True
        print(
            f"error: cannot write ({disk.strerror}: {disk.filename or where.get('workdir')}). Free some space "
            "or fix the permissions, then rerun the same command: it resumes from the last complete "
            "checkpoint.",
            file=sys.stderr,
            flush=True,
        )
        return 2
    finally:
        logging.getLogger("absl").removeFilter(quiet)


def config_of(argv: list[str]):
    """The config a command line asks for (printing what `resolve_config` notes)."""
    args, overrides = parse_args(argv)
    return resolve_config(args.workdir, args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    where: dict[str, str] = {}
    command = f"python -m fashion_jax.run {' '.join(argv)}"
    watched = supervisor.distributed_config(lambda: config_of(argv))
    if watched is not None:
        return supervisor.run_watched(argv, "fashion_jax.run", watched, command)

    def body() -> int:
        args, overrides = parse_args(argv)
        where["workdir"] = args.workdir
        config = resolve_config(args.workdir, args.config, overrides)
        sharding.initialize_distributed(config)
        from fashion_jax.train import train_and_evaluate

        summary = train_and_evaluate(config, args.workdir, restart=args.restart)
        import jax

        if jax.process_index() == 0 and summary["test_accuracy"] is not None:
            print(
                f"test loss {summary['test_loss']:.4f}, test accuracy {summary['test_accuracy']:.4f} "
                f"({summary['train_seconds']:.1f} s training) -> {Path(args.workdir) / 'summary.json'}",
                flush=True,
            )
        return 0

    return guarded(body, command, where)


if __name__ == "__main__":
    sys.exit(main())
