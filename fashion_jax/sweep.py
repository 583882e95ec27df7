"""Run one experiment over several seeds and report mean ± std of test accuracy and wall time.

  python -m fashion_jax.sweep --workdir experiments/convnet_10ep --seeds 0,1,2 [--config.KEY=VALUE ...]

The config is `WORKDIR/config.py` (or `--config FILE`) with the overrides; seed S trains in
`WORKDIR/seed_S/` exactly like `python -m fashion_jax.run --workdir WORKDIR/seed_S --config.seed=S`,
so an interrupted sweep resumes where it stopped (finished seeds are not retrained). The table
is printed and written to `WORKDIR/sweep.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fashion_jax import config as config_lib
from fashion_jax import exits, members, run, sharding, supervisor
from fashion_jax import workdir as workdir_lib


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a user error)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m fashion_jax.sweep", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workdir", required=True, help="the experiment's folder (its config.py)")
    parser.add_argument("--seeds", default="0,1,2", help="e.g. 0,1,2 or 0-4 (default 0,1,2)")
    parser.add_argument("--config", default=None, help="config file (default: WORKDIR/config.py)")
    rows = []
    where: dict[str, str] = {}
    command = f"python -m fashion_jax.sweep {' '.join(argv)}"

    def base_config():
        flags, overrides = run.split_overrides(argv)
        args = parser.parse_args(flags)
        return run.resolve_config(args.workdir, args.config, overrides)

    watched = supervisor.distributed_config(base_config)
    if watched is not None:
        return supervisor.run_watched(argv, "fashion_jax.sweep", watched, command)

    def body() -> int:
        flags, overrides = run.split_overrides(argv)
        args = parser.parse_args(flags)
        seeds = members.parse_seeds(args.seeds)
        base = run.resolve_config(args.workdir, args.config, overrides)
        workdir_lib.check_kinds([Path(args.workdir) / members.SWEEP_FILE])
        sharding.initialize_distributed(base)
        for seed in seeds:
            config = config_lib.validate(config_lib.apply_overrides(base, {"seed": str(seed)}))
            print(f"--- seed {seed}", flush=True)
            where["workdir"] = str(Path(args.workdir) / f"seed_{seed}")
            rows.append(members.run_seed(config, Path(where["workdir"])))
        where["sweep"] = args.workdir
        return 0

    status = exits.guarded(body, command, where)
    if status:
        return status
    print(members.table(rows))
    (Path(where["sweep"]) / members.SWEEP_FILE).write_text(members.sweep_json(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
