"""Host overhead per train step, with a model whose compute is negligible (`kit.probe`):
(a) the bare jitted `steps.train_step`, (b) the runner's compiled chunk with k=1 step per call,
(c) with k=100, (d) the full runner `train.train_and_evaluate` with steps_per_call 1 and 100
(epoch_seconds of the epochs after the first, per step; evaluation excluded)."""

from __future__ import annotations

import statistics
import time

import jax

from common import table
from fashion_jax import config as config_lib
from fashion_jax import programs, sharding, steps
from kit import probe
from kit.runner import epoch_step_s, run_runner, steps_per_epoch, window_step_s
from kit.shared import (
    batch_order,
    data_overrides,
    fresh_state,
    override,
    spread,
    synthetic_data,
)
from kit.throughput import time_chunk


def overhead_section(ctx) -> None:
    """Rows "overhead": one per path and k, microseconds per step (median window, min, max)."""
    args, clock, mesh = ctx.args, ctx.clock, ctx.mesh
    batch = args.overhead_batch
    base = override(
        config_lib.get_config(), model=probe.NAME, batch_size=batch, progress_bar="false"
    )
    data = synthetic_data(mesh, 4096)
    images, labels = data
    n_steps, windows = args.overhead_steps, 3 if args.smoke else 5

    def add(name, k, times):
        row = {
            "path": name,
            "k": k,
            "us_per_step": statistics.median(times) * 1e6,
            "min_us": min(times) * 1e6,
            "max_us": max(times) * 1e6,
            "spread": spread(times),
            "windows": f"{len(times)}x{n_steps}",
        }
        ctx.results.add("overhead", row)
        print(f"  {name} k={k}: {row['us_per_step']:.1f} us/step", flush=True)

    print(f"\n## Host overhead per step ({probe.NAME}, batch {batch})\n", flush=True)
    # (a) The bare jitted step on a fixed device batch.
    step = jax.jit(steps.train_step, donate_argnums=0)
    fixed = jax.device_put(
        {"image": images[:batch], "label": labels[:batch]}, sharding.batch_sharded(mesh)
    )
    key = jax.random.key(2)
    state = fresh_state(base, mesh)
    state, _ = step(state, fixed, key)
    jax.block_until_ready(state)
    times = []
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(n_steps):
            state, m = step(state, fixed, key)
        jax.block_until_ready((state, m))
        times.append((time.perf_counter() - t) / n_steps)
    add("(a) jit(train_step), fixed batch", 1, times)
    # (b), (c) The runner's chunk, k=1 and k=100.
    for k in (1, 100):
        perm = batch_order(mesh, 4096, batch, max(k, 16))
        chunk = programs.make_train_chunk(
            override(base, steps_per_call=k), mesh, batch, jax.random.key(1), k
        )
        state, window = fresh_state(base, mesh), programs.new_window(mesh)
        compiled = chunk.lower(state, window, images, labels, perm, 0, k).compile()
        state, window = compiled(state, window, images, labels, perm, 0, k)
        jax.block_until_ready(window)
        times, state, window = time_chunk(
            compiled, state, window, data, perm, k, max(k, 16), max(n_steps, k), windows
        )
        add(f"({'b' if k == 1 else 'c'}) train chunk", k, times)
    # (d) The full runner: epoch_seconds of the epochs after the first (training only: dispatch,
    # log steps, checkpoints, the wait for the device; evaluation excluded), and its train windows.
    for k in (1, 100) if args.runner_overhead else ():
        if clock.left() < 30 and not args.smoke:
            ctx.results.add(
                "overhead", {"path": "(d) runner train_and_evaluate", "k": k, "skipped": "deadline"}
            )
            continue
        config = override(
            base,
            steps_per_call=k,
            num_epochs=args.overhead_epochs,
            max_train_examples=args.overhead_examples,
            **data_overrides(args),
        )
        out = run_runner(config, None, max(clock.left(), 1.0), False)
        spe = steps_per_epoch(out["records"])
        epochs, windows_s = epoch_step_s(out["records"]), window_step_s(out["records"], batch)
        row = {
            "path": "(d) runner train_and_evaluate",
            "k": k,
            "us_per_step": statistics.median(epochs) * 1e6 if epochs else None,
            "min_us": min(epochs) * 1e6 if epochs else None,
            "max_us": max(epochs) * 1e6 if epochs else None,
            "spread": spread(epochs) if epochs else None,
            "windows": f"{len(epochs)}x{spe} (epochs)",
            "window_us_per_step": statistics.median(windows_s) * 1e6 if windows_s else None,
            "runner_wall_s": out["wall_s"],
            "status": out["status"],
        }
        ctx.results.add("overhead", row)
        print(f"  (d) runner k={k}: {row['us_per_step'] or float('nan'):.1f} us/step", flush=True)
    print(
        "\n### Host overhead per train step (us; median window; runner: epochs after the first,"
        " window_us: its train records, which leave out the wait at each log step)\n"
    )
    columns = ["path", "k", "us_per_step", "min_us", "max_us", "windows", "window_us_per_step"]
    print(table(ctx.results.data["overhead"], columns), flush=True)
