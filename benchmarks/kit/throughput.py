"""Throughput, compile time and utilization of the runner's compiled chunk (`programs.make_train_chunk`)
over device-resident synthetic data (the speed does not depend on the pixels)."""

from __future__ import annotations

import math
import statistics
import time
import types
from typing import Any

import jax

from common import table
from fashion_jax import config as config_lib
from fashion_jax import programs
from kit.shared import N_TRAIN, batch_order, fresh_state, one_line, override, spread, synthetic_data


def models_to_measure(args, recipes) -> list[tuple[str, Any]]:
    """[(label, base config)] per model: seed_cnn (the defaults) and each recipe's model (its
    recipe's config, so augmentation, EMA and the optimizer are timed too), each model once."""
    if args.models:
        return [(m, override(config_lib.get_config(), model=m)) for m in args.models.split(",")]
    out = {"seed_cnn": ("seed_cnn (defaults)", config_lib.get_config())}
    for name, config in recipes:
        out.setdefault(config.model, (f"{config.model} ({name})", config))
    return list(out.values())


def steps_per_call_values(args, platform: str) -> list[tuple[int, bool]]:
    """[(k, is the platform default)], the default first: --steps-per-call's values, else the
    platform's default alone ("default") or with 1 and the accelerator default ("sweep")."""
    default = programs.steps_per_call(config_lib.get_config(), platform)
    if args.steps_per_call == "default":
        ks = [default]
    elif args.steps_per_call == "sweep":
        ks = [default, 1, programs.ACCELERATOR_STEPS_PER_CALL]
    else:
        ks = [int(k) for k in args.steps_per_call.split(",")]
    ks.sort(key=lambda k: k != default)
    return [(k, k == default) for k in dict.fromkeys(ks)]


def time_chunk(compiled, state, window, data, perm, k, n_batches, window_steps, windows):
    """Runs `windows` windows of about `window_steps` steps; returns (seconds per step per window,
    the state, the window). k=1: one step per call over `n_batches` batches; else calls of k steps."""
    images, labels = data
    calls = max(1, round(window_steps / k))
    times = []
    i = 0
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(calls):
            state, window = compiled(
                state, window, images, labels, perm, i % n_batches if k == 1 else 0, k
            )
            i += 1
        jax.block_until_ready((state, window))
        times.append((time.perf_counter() - t) / (calls * k))
    return times, state, window


def plan(ctx) -> list[dict[str, Any]]:
    """The configurations in the order measured: the platform's default k first, then per model
    (seed_cnn, then the recipes'), dtype and batch ("recipe": each recipe's own batch size)."""
    args = ctx.args
    out = []
    for k, is_default in steps_per_call_values(args, ctx.platform):
        for label, config in models_to_measure(args, ctx.recipes):
            for dtype in args.dtypes.split(","):
                batches = (
                    [config.batch_size]
                    if args.batches == "recipe"
                    else [int(b) for b in args.batches.split(",")]
                )
                for batch in batches:
                    out.append(
                        {
                            "model": label.split(" ")[0],
                            "config": label,
                            "batch": batch,
                            "dtype": dtype,
                            "k": k,
                            "platform_default_k": is_default,
                            "_base": config,
                        }
                    )
    return out


def throughput_section(ctx) -> None:
    """Rows "throughput" (one per configuration: measured, or "skipped"/"failed" with a reason)
    and "compile" (lower and compile seconds of each measured program)."""
    args, clock, mesh = ctx.args, ctx.clock, ctx.mesh
    n_dev = mesh.devices.size
    budget_end = clock.elapsed() + args.throughput_budget_s
    data = synthetic_data(mesh, args.synthetic_examples)
    configs = plan(ctx)
    print(
        f"\n## Throughput ({len(configs)} configurations, budget {args.throughput_budget_s:.0f} s)\n",
        flush=True,
    )
    for row in configs:
        base = row.pop("_base")
        left = min(budget_end - clock.elapsed(), clock.left())
        if row["batch"] % n_dev:
            row["skipped"] = f"batch does not split over {n_dev} devices"
        elif left <= 0:
            row["skipped"] = "throughput budget spent"
        else:
            try:
                row = measure_config(ctx, row, base, data, left)
            except TimeoutError as e:
                row["skipped"] = str(e)
            except Exception as e:  # One configuration failing (out of memory) loses no other.
                row["failed"] = one_line(e)
        ctx.results.add("throughput", row)
        what = f"  {row['config']} batch {row['batch']} {row['dtype']} k={row['k']}"
        if "skipped" in row or "failed" in row:
            print(f"{what}: {row.get('skipped') or 'failed: ' + row['failed']}", flush=True)
        else:
            mfu = row["mfu_pct"] if row["mfu_pct"] is not None else float("nan")
            print(
                f"{what}: {row['images_per_s']:,.0f} images/s, {row['us_per_step']:.1f} us/step "
                f"(spread {row['spread']:.0%}), compile {row['compile_s']:.2f} s, MFU {mfu:.2f}%",
                flush=True,
            )
    rows = ctx.results.data.get("throughput", [])
    done = [r for r in rows if "images_per_s" in r]
    print("\n### Throughput (median window; epoch = 60,000 images)\n")
    columns = ["model", "batch", "dtype", "k", "platform_default_k", "images_per_s", "epoch_s"]
    print(table(done, [*columns, "us_per_step", "spread", "windows"]))
    print(
        "\n### Compile time of the train chunk (lower + compile, s; first_call: first call minus a steady call)\n"
    )
    columns = ["model", "batch", "dtype", "k", "lower_s", "compile_s", "first_call_extra_s"]
    print(table(ctx.results.data.get("compile", []), columns))
    print(
        "\n### Model FLOP utilization (FLOPs per step: XLA cost analysis of the compiled program)\n"
    )
    columns = ["model", "batch", "dtype", "k", "gflop_per_step", "achieved_tflops"]
    print(table(done, [*columns, "peak_tflops", "mfu_pct"]))
    left_out = [r for r in rows if "images_per_s" not in r]
    if left_out:
        print(
            "\nnot measured: "
            + "; ".join(
                f"{r['model']} b{r['batch']} {r['dtype']} k={r['k']} ({r.get('skipped') or r.get('failed')})"
                for r in left_out
            )
        )
    print(flush=True)


def step_flops(ctx, row, config, state, compiled, split) -> float | None:
    """One step's FLOPs, as a run counts them (`programs.run_costs`): the compiled program's cost
    analysis (a k-step loop's body counts once) times the devices; off the CPU, the same step
    compiled for the host's CPU, since a GPU's analysis leaves out cuDNN's convolutions. That
    recount does not depend on k, so it is made once per model, config, batch and dtype."""
    mesh = ctx.mesh
    platform = mesh.devices.flat[0].platform
    key = (row["model"], row["config"], row["batch"], row["dtype"])
    if platform == "cpu" or key not in ctx.step_flops:
        costs = programs.run_costs(platform, config, state, compiled, split, mesh.devices.size)
        if platform == "cpu":  # The compiled program's own analysis, free: counted per row.
            return costs["train_step_flops"]
        ctx.step_flops[key] = costs["train_step_flops"]
    return ctx.step_flops[key]


def measure_config(ctx, row, base, data, left) -> dict[str, Any]:
    """Compiles and times one configuration; returns `row` with its figures (and adds its
    "compile" row). Raises TimeoutError if its windows cannot fit in `left` seconds."""
    args, mesh = ctx.args, ctx.mesh
    batch, dtype, k = row["batch"], row["dtype"], row["k"]
    config = override(
        base, batch_size=batch, compute_dtype=dtype, steps_per_call=k, progress_bar="false"
    )
    n_batches = max(k, 16)
    perm = batch_order(mesh, args.synthetic_examples, batch, n_batches)
    state = fresh_state(config, mesh)
    window = programs.new_window(mesh)
    images, labels = data
    chunk = programs.make_train_chunk(config, mesh, batch, jax.random.key(1), k)
    t = time.perf_counter()
    lowered = chunk.lower(state, window, images, labels, perm, 0, k)
    t_lower = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t
    split = types.SimpleNamespace(images=images, labels=labels)
    flops = step_flops(ctx, row, config, state, compiled, split)

    # Warm-up: the first call, then one steady call to size the windows.
    t = time.perf_counter()
    state, window = compiled(state, window, images, labels, perm, 0, k)
    jax.block_until_ready((state, window))
    first_call = time.perf_counter() - t
    t = time.perf_counter()
    state, window = compiled(state, window, images, labels, perm, 1 % n_batches if k == 1 else 0, k)
    jax.block_until_ready((state, window))
    call_s = time.perf_counter() - t
    ctx.results.add(
        "compile",
        {
            "model": row["model"],
            "config": row["config"],
            "batch": batch,
            "dtype": dtype,
            "k": k,
            "lower_s": t_lower,
            "compile_s": t_compile,
            "first_call_extra_s": max(first_call - call_s, 0.0),
        },
    )
    step_s = call_s / k
    window_steps = max(k, min(args.max_window_steps, math.ceil(args.window_s / step_s)))
    windows = 3 if call_s > 4 * args.window_s else args.windows  # Long calls: 3 windows.
    while windows > 3 and windows * window_steps * step_s > left:
        windows -= 1
    if windows * max(k, round(window_steps / k) * k) * step_s > left:
        raise TimeoutError(
            f"one step takes {step_s * 1e3:.1f} ms: {windows} windows do not fit in {left:.0f} s"
        )
    times, state, window = time_chunk(
        compiled, state, window, data, perm, k, n_batches, window_steps, windows
    )
    step = statistics.median(times)
    peak = ctx.peaks.get(dtype)
    n_dev = mesh.devices.size
    achieved = flops / step / 1e12 if flops else None
    del state, window, compiled
    return {
        **row,
        "images_per_s": batch / step,
        "epoch_s": N_TRAIN / batch * step,
        "us_per_step": step * 1e6,
        "spread": spread(times),
        "windows": f"{len(times)}x{max(1, round(window_steps / k)) * k}",
        "min_us": min(times) * 1e6,
        "max_us": max(times) * 1e6,
        "lower_s": t_lower,
        "compile_s": t_compile,
        "first_call_s": first_call,
        "flops_per_step": flops,
        "gflop_per_step": flops / 1e9 if flops else None,
        "achieved_tflops": achieved,
        "peak_tflops": peak * n_dev if peak else None,
        "mfu_pct": 100 * achieved / (peak * n_dev) if achieved and peak else None,
    }
