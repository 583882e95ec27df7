"""Train one experiment over seeds and a grid of hyperparameters; report mean ± std per point.

  python -m fashion_jax.sweep --workdir W --seeds 0,1,2 [--config FILE] [--grid KEY=V1,V2 ...] [--together] [--config.KEY=VALUE ...]

The config is `W/config.py` (or `--config FILE`) with the overrides. Every member (each grid
point x each seed) trains in its own ordinary workdir under W, `seed_S/` without a grid, else
e.g. `learning_rate=0.003-seed_1/`, exactly like `python -m fashion_jax.run` with those
overrides, so `predict`, `report` and `export` work on it and an interrupted sweep resumes where
it stopped (finished members are not retrained). `--together` trains the members as one
population: one compiled program steps them all at once (`fashion_jax.population`). The table
(per member, per grid point, overall) is printed and written to `W/sweep.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fashion_jax import exits, members, run, sharding, supervisor


def parser() -> argparse.ArgumentParser:
    """The sweep's flags (besides the `--config.KEY=VALUE` overrides)."""
    p = argparse.ArgumentParser(
        prog="python -m fashion_jax.sweep", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--workdir", required=True, help="the sweep's folder (its config.py)")
    p.add_argument("--seeds", default="0,1,2", help="e.g. 0,1,2 or 0-4 (default 0,1,2)")
    p.add_argument("--config", default=None, help="config file (default: WORKDIR/config.py)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a config key and its values (repeatable: the grid is their product)",
    )
    p.add_argument(
        "--together", action="store_true", help="train all members as one program (population)"
    )
    p.add_argument(
        "--layout",
        choices=("vmap", "unrolled"),
        default=None,
        help="with --together: one batched (vmap) program, or each member's own step in one "
        "program (unrolled: the same bits as alone); default unrolled on CPU, vmap elsewhere",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a user error)."""
    argv = sys.argv[1:] if argv is None else argv
    command = f"python -m fashion_jax.sweep {' '.join(argv)}"
    where: dict[str, str] = {}
    done: dict = {}

    def base_config():
        flags, overrides = run.split_overrides(argv)
        args = parser().parse_args(flags)
        return args, run.resolve_config(args.workdir, args.config, overrides)

    watched = supervisor.distributed_config(lambda: base_config()[1])
    if watched is not None:
        return supervisor.run_watched(argv, "fashion_jax.sweep", watched, command)

    def body() -> int:
        args, base = base_config()
        seeds = members.parse_seeds(args.seeds)
        grid = members.parse_grid(args.grid, base)
        root = Path(args.workdir)
        plan = members.plan(base, seeds, grid, root)
        members.check_grid(root, grid)
        sharding.initialize_distributed(base)
        from fashion_jax.programs import use_compilation_cache

        use_compilation_cache()
        if args.together:
            where["workdir"] = str(root)
            ready = lambda: members.record_grid(root, grid)
            rows = members.run_together(plan, ready=ready, layout=args.layout)
        else:
            members.record_grid(root, grid)
            rows = []
            for point, workdir, config in plan:
                print(f"--- {workdir.name}", flush=True)
                where["workdir"] = str(workdir)
                rows.append(members.run_one(point, workdir, config))
        done.update(rows=rows, grid=grid, root=root, together=args.together)
        return 0

    status = exits.guarded(body, command, where)
    if status:
        return status
    print(members.table(done["rows"], done["grid"]))
    text = members.sweep_json(done["rows"], done["grid"], done["together"])
    (done["root"] / members.SWEEP_FILE).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
