"""Populations on the device: N members trained together (one vmapped program) against the same
N one after another, images/s of all members, for seed_cnn and the 5-epoch recipe's network
(benchmarks/population.py measures the same on a CPU, with peak memory)."""

from __future__ import annotations

from common import table
from fashion_jax import config as config_lib
from kit.shared import one_line
from population import MODELS, images_per_second


def population_section(ctx) -> None:
    """Rows {model, members, one_by_one_img_s, together_img_s, speed_up} until the deadline."""
    args = ctx.args
    members = [int(n) for n in args.population_members.split(",")]
    steps = args.population_steps
    columns = ["model", "members", "one_by_one_img_s", "together_img_s", "speed_up"]
    for model in args.population_models.split(","):
        base = config_lib.load_experiment(MODELS[model])
        for n in members:
            if ctx.clock.left() < 20:
                print(f"population: deadline reached before {model} x {n}", flush=True)
                return
            row = {"model": model, "members": n}
            try:
                one = images_per_second(
                    base, n, "one by one", steps, ctx.mesh, args.synthetic_examples
                )
                together = images_per_second(
                    base, n, "together (vmap)", steps, ctx.mesh, args.synthetic_examples
                )
                row.update(
                    one_by_one_img_s=round(one),
                    together_img_s=round(together),
                    speed_up=round(together / one, 2),
                )
            except Exception as e:  # Out of memory at large N: recorded, the next model runs.
                row["failed"] = one_line(e)
                ctx.results.add("population", row)
                break
            ctx.results.add("population", row)
            print(table([row], columns), flush=True)
