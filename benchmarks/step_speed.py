"""Train-step speed of SeedCNN formulations, XLA flags and dispatch modes (the levers in NOTES.md).

Each configuration runs in a fresh process (XLA_FLAGS only act before JAX starts): a jitted
`train_step` that gathers its batch from device-resident uint8 data, `donate_argnums=0`, 10 warm-up
steps, then 6 windows of 50 steps; prints the median window as ms/step and images/s.

  python benchmarks/step_speed.py [--batch 64]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, record, table  # noqa: E402

FLAG = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"

CHILD = r"""
import os, sys, time, json, statistics, functools
import fashion_jax, jax, jax.numpy as jnp, numpy as np
from fashion_jax import steps, config as cl
model, batch, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = cl.get_config(); cfg.model = model
state = steps.create_train_state(jax.random.key(0), cfg)
n = batch * 50
rng = np.random.default_rng(0)
images = jnp.asarray(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8))
labels = jnp.asarray(rng.integers(0, 10, (n,), dtype=np.int32))
perm = jax.random.permutation(jax.random.key(1), n)
def one(state, i):
    idx = jax.lax.dynamic_slice_in_dim(perm, (i % 50) * batch, batch)
    return steps.train_step(state, {"image": images[idx], "label": labels[idx]})[0]
if mode == "single":
    f = jax.jit(one, donate_argnums=0)
    def window(state):
        for i in range(50):
            state = f(state, i)
        return state
else:
    g = jax.jit(lambda s: jax.lax.fori_loop(0, 50, lambda i, s: one(s, i), s), donate_argnums=0)
    window = g
for _ in range(2 if mode != "single" else 1):
    state = window(state)
jax.block_until_ready(state)
times = []
for _ in range(6):
    t = time.perf_counter(); state = window(state); jax.block_until_ready(state)
    times.append((time.perf_counter() - t) / 50)
print(json.dumps({"ms_per_step": 1000 * statistics.median(times)}))
"""


def measure(model, batch, mode, flag):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FASHION_JAX_KEEP_XLA_FLAGS": "1",
        "XLA_FLAGS": FLAG if flag else "",
    }
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(batch), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    ms = json.loads(out.stdout.strip().splitlines()[-1])["ms_per_step"]
    return {
        "model": model,
        "batch": batch,
        "dispatch": mode,
        "ynn_individual_dot_flag": flag,
        "ms_per_step": ms,
        "images_per_s": batch * 1000 / ms,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    configs = [
        ("plain_seed_cnn", "single", False),
        ("plain_seed_cnn", "single", True),
        ("seed_cnn", "single", False),
        ("seed_cnn", "single", True),
        ("plain_seed_cnn", "fori", True),
        ("seed_cnn", "fori", True),
    ]
    rows = []
    for model, mode, flag in configs:
        rows.append(measure(model, args.batch, mode, flag))
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print("\n" + table(rows, list(rows[0])))
    record("step_speed", rows, {"args": vars(args)})


if __name__ == "__main__":
    main()
