"""The runner's command line: `python -m fashion_jax.run --workdir experiments/base [--config.KEY=VALUE ...]`.

Loads `WORKDIR/config.py` (or `--config FILE`, or the defaults), applies overrides, validates,
joins `jax.distributed` if asked, and calls `fashion_jax.train.train_and_evaluate`. It ends as every
command does (`exits`): a user error prints one `error:` line and exits 2; a preemption
(SIGTERM/SIGINT) saves and exits 128 + signal. A distributed run trains in a watched child
(`supervisor`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fashion_jax import config as config_lib
from fashion_jax import exits, sharding, supervisor
from fashion_jax.errors import ConfigError


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
        from fashion_jax.programs import use_compilation_cache
        from fashion_jax.train import train_and_evaluate

        use_compilation_cache()
        summary = train_and_evaluate(config, args.workdir, restart=args.restart)
        import jax

        if jax.process_index() == 0 and summary["test_accuracy"] is not None:
            print(
                f"test loss {summary['test_loss']:.4f}, test accuracy {summary['test_accuracy']:.4f} "
                f"({summary['train_seconds']:.1f} s training) -> {Path(args.workdir) / 'summary.json'}",
                flush=True,
            )
        return 0

    return exits.guarded(body, command, where)


if __name__ == "__main__":
    sys.exit(main())
