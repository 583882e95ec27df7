"""N members trained together (one vmapped program) against the same N one after another.

For each network and N, three child processes, in turn: "one by one" steps N lone runs
(`fashion_jax.programs.build`) one after another, "together (vmap)" and "together (unrolled)" a
population of N members (`fashion_jax.population.build` in each layout; seeds 0..N-1, learning
rates spread over a grid), each for the same number of timed steps after a warm-up (compilation
excluded). Reports images per second (all members together), the speed-ups over one by one, and
each child's peak RSS.
Appends to results.jsonl.

  python benchmarks/population.py [--members 1,2,4,8,16] [--models seed_cnn,convnet_5ep] [--steps 20]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, record, table  # noqa: E402

# The networks: the tutorial's, and the 5-epoch recipe's (its experiment file's config).
MODELS = {
    "seed_cnn": ROOT / "experiments" / "base" / "config.py",
    "convnet_5ep": ROOT / "experiments" / "convnet_5ep" / "config.py",
}
TRAIN_IMAGES = 8192  # Synthetic uint8 images: a step's cost does not depend on their content.


def measure(model: str, members: int, mode: str, steps: int) -> dict:
    """In this process: images/s of `steps` train steps of `members` members in `mode` (see
    `images_per_second`), and this process' peak RSS."""
    from fashion_jax import config as config_lib
    from fashion_jax import sharding

    base = config_lib.load_experiment(MODELS[model])
    ips = images_per_second(base, members, mode, steps, sharding.make_mesh(), TRAIN_IMAGES)
    return {
        "images_per_second": ips,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def images_per_second(base, members: int, mode: str, steps: int, mesh, examples: int) -> float:
    """Images/s of all `members` members (seeds 0.., learning rates spread around `base`'s) over
    `steps` train steps each on `examples` synthetic images, after two warm-up steps per program:
    `mode` "together (vmap)" or "together (unrolled)" (one population program in that layout),
    or "one by one" (a lone run's program, member after member). Also the accelerator kit's."""
    import jax
    import numpy as np

    from fashion_jax import config as config_lib
    from fashion_jax import population, population_loop, programs
    from fashion_jax.data import DatasetInfo, Split
    from fashion_jax.epochs import LoopState

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, examples).astype(np.int32)
    images = rng.integers(0, 256, (examples, 28, 28, 1)).astype(np.uint8)
    splits = {"train": Split(images, labels)}
    info = DatasetInfo((28, 28, 1), 10, tuple(map(str, range(10))))
    lr = base.learning_rate
    configs = [
        config_lib.apply_overrides(base, {"seed": str(i), "learning_rate": str(lr * (1 + i / 8))})
        for i in range(members)
    ]
    if mode.startswith("together"):  # "together (vmap)" or "together (unrolled)"
        layout = mode.split("(")[1].rstrip(")")
        groups = [population.build(configs, mesh, splits, info, 10_000, layout=layout).programs]
        window = lambda: population_loop.new_windows([LoopState()] * members, mesh)
    else:
        groups = [programs.build(configs[0], mesh, splits, info, 10_000)] * members
        window = lambda: programs.new_window(mesh)
    states = [(g.init(), window(), g.epoch_perm(0)) for g in groups]
    k = groups[0].steps_per_call

    def run(n):
        for i, g in enumerate(groups):
            state, win, perm = states[i]
            for s in range(0, n, k):
                state, win = g.train_chunk(state, win, g.images, g.labels, perm, s, min(k, n - s))
            jax.block_until_ready(state)
            states[i] = (state, win, perm)

    run(2 * k)
    start = time.perf_counter()
    run(steps)
    return members * steps * base.batch_size / (time.perf_counter() - start)


def child(model: str, members: int, mode: str, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", model, str(members), mode, str(steps)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", default="1,2,4,8,16")
    parser.add_argument("--models", default="seed_cnn,convnet_5ep")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, members, mode, steps = args.child
        print(json.dumps(measure(model, int(members), mode, int(steps))))
        return
    rows = []
    for model in args.models.split(","):
        for n in map(int, args.members.split(",")):
            one = child(model, n, "one by one", args.steps)
            vmap = child(model, n, "together (vmap)", args.steps)
            unrolled = child(model, n, "together (unrolled)", args.steps)
            ips = lambda r: r["images_per_second"]
            rows.append(
                {
                    "model": model,
                    "members": n,
                    "one_by_one_img_s": round(ips(one)),
                    "vmap_img_s": round(ips(vmap)),
                    "unrolled_img_s": round(ips(unrolled)),
                    "vmap_speed_up": round(ips(vmap) / ips(one), 2),
                    "unrolled_speed_up": round(ips(unrolled) / ips(one), 2),
                    "one_by_one_peak_mb": round(one["peak_rss_mb"]),
                    "vmap_peak_mb": round(vmap["peak_rss_mb"]),
                    "unrolled_peak_mb": round(unrolled["peak_rss_mb"]),
                }
            )
            print(table(rows[-1:], list(rows[-1])), flush=True)
    print(table(rows, list(rows[0])))
    record("population", rows, {"steps": args.steps, "train_images": TRAIN_IMAGES})


if __name__ == "__main__":
    main()
