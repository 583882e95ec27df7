"""One command that measures an accelerator (or this CPU) for fashion_jax, in about 8 minutes on a GPU.

  python benchmarks/accelerator.py                  # GPU / TPU: everything below, ~8 minutes
  python benchmarks/accelerator.py --smoke          # the same code paths on CPU in seconds
  python benchmarks/accelerator.py --sections overhead,throughput --models seed_cnn --batches 64,1024

Sections (each prints a table; all of them go into one JSON line appended to --results):

1. peak: the device's peak from a table of known devices, and a measured large matmul.
2. overhead: host overhead per train step with a model whose compute is negligible
   (`overhead_probe`, a Dense on a 4x4 average-pooled image): (a) the bare jitted
   `steps.train_step`, (b) the runner's compiled chunk with k=1 step per call, (c) with k=100,
   (d) the full runner `train.train_and_evaluate` with steps_per_call 1 and 100: epoch_seconds of
   the epochs after the first, per step (evaluation excluded; log steps, checkpoints included).
3. throughput: images/s and time per 60,000 images of every model the recipes use
   (`experiments/*/config.py`, plus seed_cnn), at several batch sizes, steps_per_call 1 and the
   platform default, float32 and bfloat16, through the runner's own compiled chunk
   (`programs.make_train_chunk`) over device-resident data; median of several windows after warm-up.
   With each row: lower and compile time of the chunk, FLOPs per step (XLA cost analysis of the
   one-step program), achieved TFLOP/s and model FLOP utilization against the peak.
4. time_to_accuracy: the real runner on each recipe with a target test accuracy (TARGETS), in a
   temporary workdir; the first epoch reaching the target, the wall time to it from the call
   (data, compilation, evaluation included) and the training time (sum of epoch_seconds; and
   steady-state, without compilation). A run stops once it reaches its target (--full-runs to
   train every epoch) or when the budget is spent; what does not fit is reported as skipped.

Runs on one process (all its local devices); batch sizes that do not split over the devices are
skipped. Throughput uses synthetic images (the speed does not depend on the pixels); the
time-to-accuracy and runner rows use the real dataset (or --data-dir / --idx-dir). Budgets:
--throughput-budget-s for section 3, --budget-s for section 4, --deadline-s for the whole run.

--smoke: batch 8, 3 steps per window, k in {1, 3}, the probe model for throughput and for the
one recipe (`fast`, 1 epoch on 640 examples; --tta-model recipe keeps its own model), a 60 s
budget; write its line elsewhere with --results.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata as md
import json
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# isort: off
import fashion_jax  # noqa: E402,F401  (first, before jax: it sets the XLA:CPU flag)

# isort: on
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from common import machine, table  # noqa: E402
from fashion_jax import config as config_lib  # noqa: E402
from fashion_jax import metrics as metrics_lib  # noqa: E402
from fashion_jax import models, preemption, programs, sharding, steps, train  # noqa: E402
from fashion_jax.errors import UserError  # noqa: E402

# Test accuracy each recipe is expected to reach (experiments/NAME/config.py); others are skipped.
TARGETS = {"base": 0.90, "fast": 0.90, "frontier_093": 0.93, "frontier_094": 0.94, "best": 0.95}

# Dense peak TFLOP/s per device (one JAX device), by a regular expression on the lower-cased
# device_kind. "float32" is what a float32 matmul runs at with JAX's default precision: TF32
# tensor cores on NVIDIA Ampere and later, one bfloat16 pass on TPU (jax.default_matmul_precision).
# Sources: NVIDIA datasheets (H100 SXM: bf16 989.4, tf32 494.7, fp32 vector 66.9; A100: 312 /
# 156 / 19.5; L4: 121 / 60 / 30.3), Google Cloud TPU pages (bf16 per chip: v4 275, v5e 197,
# v5p 459, v6e 918). Unknown devices (and CPUs) use the measured matmul.
PEAKS = [
    (
        r"h200|gh200|h100 80gb hbm3|h100 sxm",
        {"bfloat16": 989.4, "float32": 494.7, "float32_vector": 66.9},
    ),
    (r"h100 pcie", {"bfloat16": 756.0, "float32": 378.0, "float32_vector": 51.2}),
    (r"a100", {"bfloat16": 312.0, "float32": 156.0, "float32_vector": 19.5}),
    (r"\bl4\b", {"bfloat16": 121.0, "float32": 60.0, "float32_vector": 30.3}),
    (r"tpu v4", {"bfloat16": 275.0, "float32": 275.0}),
    (r"tpu v5 ?lite|tpu v5e", {"bfloat16": 197.0, "float32": 197.0}),
    (r"tpu v5p|tpu v5$", {"bfloat16": 459.0, "float32": 459.0}),
    (r"tpu v6 ?lite|tpu v6e", {"bfloat16": 918.0, "float32": 918.0}),
]

N_TRAIN = 60000


class OverheadProbe(nn.Module):
    """A classifier with negligible compute: 7x7 average pooling to 4x4, then one Dense layer."""

    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train
        x = nn.avg_pool(x, (7, 7), (7, 7)).reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


PROBE = "overhead_probe"


class Clock:
    """Seconds since the script started, and the deadline every section checks."""

    def __init__(self, deadline_s: float):
        self.t0, self.deadline_s = time.perf_counter(), deadline_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.deadline_s - self.elapsed()


# ---------------------------------------------------------------------------------------------
# The device and its peak.


def device_info() -> dict[str, Any]:
    devices = jax.devices()
    d = devices[0]
    backend = jax.extend.backend.get_backend()
    info = {
        "platform": d.platform,
        "device_kind": d.device_kind,
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "platform_version": getattr(backend, "platform_version", None),
        "jax": jax.__version__,
        "jaxlib": md.version("jaxlib"),
    }
    for attr in ("compute_capability", "core_count", "num_cores"):
        if getattr(d, attr, None) is not None:
            info[attr] = str(getattr(d, attr))
    plugins = {}
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(
            ("jax-cuda", "jax_cuda", "jax-rocm", "libtpu", "nvidia-cudnn", "nvidia-cuda-runtime")
        ):
            plugins[name] = dist.version
    info["plugins"] = dict(sorted(plugins.items()))
    cuda = {}
    with contextlib.suppress(Exception):
        from jax._src.lib import cuda_versions

        if cuda_versions is not None:
            for name in dir(cuda_versions):
                if name.endswith("_get_version"):
                    with contextlib.suppress(Exception):
                        cuda[name.removesuffix("_get_version")] = getattr(cuda_versions, name)()
    with contextlib.suppress(Exception):
        env = jax.print_environment_info(return_string=True) or ""
        m = re.search(r"CUDA Version:\s*([\d.]+)", env)
        if m:
            cuda["nvidia_smi_cuda"] = m.group(1)
        m = re.search(r"Driver Version:\s*([\d.]+)", env)
        if m:
            cuda["driver"] = m.group(1)
    if cuda:
        info["cuda"] = cuda
    return info


def table_peak(device_kind: str) -> dict[str, float] | None:
    kind = device_kind.lower()
    for pattern, peaks in PEAKS:
        if re.search(pattern, kind):
            return peaks
    return None


def measure_matmul(dtype: str, n: int, reps: int, rounds: int = 3) -> float:
    """TFLOP/s of an n x n @ n x n matmul on one device, best of `rounds` rounds of `reps` calls."""
    key = jax.random.key(0)
    a = jax.random.normal(key, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(f(a, b))
    best = math.inf
    for _ in range(rounds):
        t = time.perf_counter()
        out = [f(a, b) for _ in range(reps)]
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best / 1e12


def peak_section(args, info) -> dict[str, Any]:
    known = table_peak(info["device_kind"])
    n, reps = (512, 2) if args.smoke else ((1024, 4) if info["platform"] == "cpu" else (8192, 20))
    measured = {dt: measure_matmul(dt, n, reps) for dt in ("float32", "bfloat16")}
    rows = []
    for dt in ("float32", "bfloat16"):
        rows.append(
            {
                "dtype": dt,
                "table_tflops": known.get(dt) if known else None,
                "matmul_tflops": measured[dt],
                "matmul_n": n,
                "used_tflops": known[dt] if known else measured[dt],
                "source": f"table ({info['device_kind']})" if known else "measured matmul",
            }
        )
    print("\n## Peak per device (TFLOP/s; float32 at JAX's default matmul precision)\n")
    print(
        table(
            rows, ["dtype", "table_tflops", "matmul_tflops", "matmul_n", "used_tflops", "source"]
        ),
        flush=True,
    )
    return {"rows": rows, "table": known}


# ---------------------------------------------------------------------------------------------
# Shared pieces: configs, the state, device-resident synthetic data.


def recipe_configs(args) -> list[tuple[str, Any]]:
    """[(name, config)] of every experiments/*/config.py, `fast` first, then by name."""
    out = []
    for path in sorted((ROOT / "experiments").glob("*/config.py")):
        name = path.parent.name
        try:
            out.append((name, config_lib.load_experiment(path)))
        except UserError as e:
            print(f"skipping experiments/{name}: {e}", file=sys.stderr)
    out.sort(key=lambda nc: (nc[0] != "fast", nc[0]))
    return out


def override(config, **values):
    config = config_lib.apply_overrides(config, {k: str(v) for k, v in values.items()})
    return config_lib.validate(config)


_STATES: dict[str, Any] = {}


def fresh_state(config, mesh, total_steps: int = 100_000):
    """A new train state for `config` at step 0 (a copy: callers donate it). Initialized and
    compiled once per state-defining config; batch size and steps per call do not change it."""
    key = config_lib.to_json(override(config, batch_size=1, steps_per_call=0)) + str(total_steps)
    if key not in _STATES:
        init = jax.jit(
            functools.partial(steps.create_train_state, config=config, total_steps=total_steps),
            out_shardings=sharding.replicated(mesh),
        )
        _STATES[key] = init(jax.random.key(config.seed))
    return jax.tree.map(jnp.copy, _STATES[key])


def synthetic_data(mesh, n: int):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(n,), dtype=np.int32)
    return sharding.put_replicated(images, mesh), sharding.put_replicated(labels, mesh)


def batch_order(mesh, n_examples: int, batch: int, batches: int):
    rng = np.random.default_rng(1)
    return sharding.put_replicated(
        rng.integers(0, n_examples, size=(batch * batches,), dtype=np.int32), mesh
    )


def flops_of(cost) -> float | None:
    """`flops` from a cost analysis, whichever form it takes (dict, list of dicts, None)."""
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    value = cost.get("flops")
    return float(value) if value is not None and value >= 0 else None


def spread(times: list[float]) -> float:
    """(max - min) / median of a list of window times."""
    return (max(times) - min(times)) / statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Throughput, compile time and utilization of the runner's compiled chunk.


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
    """[(k, is the platform default)]: 1 and the runner's default for this platform."""
    default = programs.steps_per_call(config_lib.get_config(), platform)
    if args.smoke:
        return [(1, default == 1), (3, False)]
    ks = [1, default] + ([train.ACCELERATOR_STEPS_PER_CALL] if default == 1 else [])
    ks = [int(k) for k in args.steps_per_call.split(",")] if args.steps_per_call else ks
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


def throughput_section(args, clock, mesh, peaks, recipes) -> tuple[list[dict], list[dict]]:
    platform = jax.devices()[0].platform
    n_dev = mesh.devices.size
    budget_end = clock.elapsed() + args.throughput_budget_s
    data = synthetic_data(mesh, args.synthetic_examples)
    batches = [int(b) for b in args.batches.split(",")]
    dtypes = args.dtypes.split(",")
    ks = steps_per_call_values(args, platform)
    # The platform's default k first, so a short budget still measures what the runner does.
    ks.sort(key=lambda kd: not kd[1])
    plan = [
        (k, is_default, label, config, dtype, batch)
        for k, is_default in ks
        for label, config in models_to_measure(args, recipes)
        for dtype in dtypes
        for batch in batches
    ]
    rows, compile_rows, flops_cache = [], [], {}
    print(
        f"\n## Throughput ({len(plan)} configurations, budget {args.throughput_budget_s:.0f} s)\n",
        flush=True,
    )
    for k, is_default, label, base, dtype, batch in plan:
        row = {
            "model": label.split(" ")[0],
            "config": label,
            "batch": batch,
            "dtype": dtype,
            "k": k,
            "platform_default_k": is_default,
        }
        left = min(budget_end - clock.elapsed(), clock.left())
        if batch % n_dev:
            rows.append({**row, "skipped": f"batch does not split over {n_dev} devices"})
            continue
        if left <= 0:
            rows.append({**row, "skipped": "throughput budget spent"})
            continue
        try:
            rows.append(
                measure_config(args, row, base, mesh, data, peaks, flops_cache, left, compile_rows)
            )
        except (
            Exception
        ) as e:  # One configuration failing (e.g. out of memory) must not lose the others.
            rows.append({**row, "skipped": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"})
        r = rows[-1]
        if "skipped" in r:
            print(f"  {label} batch {batch} {dtype} k={k}: skipped ({r['skipped']})", flush=True)
        else:
            print(
                f"  {label} batch {batch} {dtype} k={k}: {r['images_per_s']:,.0f} images/s, "
                f"{r['us_per_step']:.1f} us/step (spread {r['spread']:.0%}), compile {r['compile_s']:.2f} s, "
                f"MFU {r['mfu_pct'] if r['mfu_pct'] is not None else float('nan'):.2f}%",
                flush=True,
            )
    done = [r for r in rows if "skipped" not in r]
    print("\n### Throughput (median window; epoch = 60,000 images)\n")
    print(
        table(
            done,
            [
                "model",
                "batch",
                "dtype",
                "k",
                "platform_default_k",
                "images_per_s",
                "epoch_s",
                "us_per_step",
                "spread",
                "windows",
            ],
        )
    )
    print(
        "\n### Compile time of the train chunk (lower + compile, s; first_call: first call minus a steady call)\n"
    )
    print(
        table(
            compile_rows,
            ["model", "batch", "dtype", "k", "lower_s", "compile_s", "first_call_extra_s"],
        )
    )
    print(
        "\n### Model FLOP utilization (FLOPs per step: XLA cost analysis of the one-step program)\n"
    )
    print(
        table(
            done,
            [
                "model",
                "batch",
                "dtype",
                "k",
                "gflop_per_step",
                "achieved_tflops",
                "peak_tflops",
                "mfu_pct",
            ],
        )
    )
    skipped = [r for r in rows if "skipped" in r]
    if skipped:
        print(
            "\nskipped: "
            + "; ".join(
                f"{r['model']} b{r['batch']} {r['dtype']} k={r['k']} ({r['skipped']})"
                for r in skipped
            )
        )
    sys.stdout.flush()
    return rows, compile_rows


def measure_config(args, row, base, mesh, data, peaks, flops_cache, left, compile_rows) -> dict:
    batch, dtype, k = row["batch"], row["dtype"], row["k"]
    config = override(
        base, batch_size=batch, compute_dtype=dtype, steps_per_call=k, progress_bar="false"
    )
    step_key = jax.random.key(1)
    n_batches = max(k, 16)
    perm = batch_order(mesh, args.synthetic_examples, batch, n_batches)
    state = fresh_state(config, mesh)
    window = programs.new_window(mesh)
    images, labels = data
    call_args = (state, window, images, labels, perm, 0, k)

    chunk = programs.make_train_chunk(config, mesh, batch, step_key, k)
    t = time.perf_counter()
    lowered = chunk.lower(*call_args)
    t_lower = time.perf_counter() - t
    fkey = (row["config"], batch, dtype)
    if (
        fkey not in flops_cache
    ):  # FLOPs per step from the one-step program (a loop's body counts once).
        one = (
            lowered
            if k == 1
            else programs.make_train_chunk(config, mesh, batch, step_key, 1).lower(*call_args)
        )
        flops_cache[fkey] = flops_of(one.cost_analysis())
    t = time.perf_counter()
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t
    compiled_flops = flops_of(compiled.cost_analysis()) if k == 1 else None

    # Warm-up: the first call, then one steady call to size the windows.
    t = time.perf_counter()
    state, window = compiled(state, window, images, labels, perm, 0, k)
    jax.block_until_ready((state, window))
    first_call = time.perf_counter() - t
    t = time.perf_counter()
    state, window = compiled(state, window, images, labels, perm, 1 % n_batches if k == 1 else 0, k)
    jax.block_until_ready((state, window))
    call_s = time.perf_counter() - t
    compile_rows.append(
        {
            "model": row["model"],
            "config": row["config"],
            "batch": batch,
            "dtype": dtype,
            "k": k,
            "lower_s": t_lower,
            "compile_s": t_compile,
            "first_call_extra_s": max(first_call - call_s, 0.0),
        }
    )
    step_s = call_s / k
    if args.smoke:
        window_steps, windows = args.window_steps, args.windows
    else:
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
    flops = flops_cache[fkey]
    peak = peaks["used"].get(dtype)
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
        "compiled_flops_per_step": compiled_flops,
        "gflop_per_step": flops / 1e9 if flops else None,
        "achieved_tflops": achieved,
        "peak_tflops": peak * n_dev if peak else None,
        "mfu_pct": 100 * achieved / (peak * n_dev) if achieved and peak else None,
    }


# ---------------------------------------------------------------------------------------------
# The runner: a watched run of train_and_evaluate.


class Watch(threading.Thread):
    """Polls WORKDIR/metrics.jsonl during a run: notes when an eval record first reaches `target`,
    and asks the runner to stop (SIGTERM, which it turns into a clean save and `Preempted`) once
    the target is reached (if `stop_at_target`) or after `limit_s`."""

    def __init__(self, workdir: Path, target: float | None, limit_s: float, stop_at_target: bool):
        super().__init__(daemon=True)
        self.workdir, self.target, self.limit_s, self.stop_at_target = (
            workdir,
            target,
            limit_s,
            stop_at_target,
        )
        self.t0 = time.perf_counter()
        self.hit_s: float | None = None
        self.stop_reason: str | None = None
        self.done = threading.Event()

    def run(self):
        last_signal = -math.inf
        while not self.done.wait(0.05):
            now = time.perf_counter() - self.t0
            if self.hit_s is None and self.target is not None:
                for r in metrics_lib.read(self.workdir):
                    if r["type"] == "eval" and r.get("test_accuracy", -1) >= self.target:
                        self.hit_s = now
                        break
            if self.stop_reason is None:
                if self.hit_s is not None and self.stop_at_target:
                    self.stop_reason = "target"
                elif now > self.limit_s:
                    self.stop_reason = "budget"
            if (
                self.stop_reason and now - last_signal > 1.0
            ):  # Repeated: a signal between loops is ignored.
                last_signal = now
                os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def quiet_sigterm():
    """While the runner is not training, a SIGTERM from the watch must not kill this process."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def no_end_report():
    """The end-of-run report (plots) is not training: skip it in measured runs."""
    saved = train._write_report
    train._write_report = lambda workdir: None
    try:
        yield
    finally:
        train._write_report = saved


def run_runner(
    config, target: float | None, limit_s: float, stop_at_target: bool
) -> dict[str, Any]:
    """Runs `train_and_evaluate(config, tmp)`; returns its records and timings."""
    with (
        tempfile.TemporaryDirectory(prefix="fashion_jax_bench_") as tmp,
        quiet_sigterm(),
        no_end_report(),
    ):
        workdir = Path(tmp) / "w"
        watch = Watch(workdir, target, limit_s, stop_at_target)
        t = time.perf_counter()
        watch.start()
        status = "finished"
        try:
            train.train_and_evaluate(config, workdir)
        except preemption.Preempted:
            status = f"stopped ({watch.stop_reason})"
        finally:
            wall = time.perf_counter() - t
            watch.done.set()
            watch.join()
        records = metrics_lib.read(workdir)
    return {"records": records, "wall_s": wall, "hit_s": watch.hit_s, "status": status}


def window_step_s(records, batch: int) -> list[float]:
    """Seconds per step of each train window after the first (which includes compilation). The
    runner times a window up to its last dispatch: the wait for the device at the log step is in
    no window, so with few calls per window these read low (see epoch_step_s)."""
    return [
        batch / r["images_per_second"]
        for r in records
        if r["type"] == "train" and r.get("images_per_second")
    ][1:]


def steps_per_epoch(records) -> int | None:
    first = next((r for r in records if r["type"] == "eval"), None)
    return first["step"] // first["epoch"] if first else None


def epoch_step_s(records) -> list[float]:
    """Seconds per step of each epoch after the first, from epoch_seconds (the whole epoch's
    training: every dispatch, log step, checkpoint and the wait for the device; no evaluation)."""
    spe = steps_per_epoch(records)
    return [r["epoch_seconds"] / spe for r in records if r["type"] == "eval"][1:]


# ---------------------------------------------------------------------------------------------
# Host overhead per step.


def overhead_section(args, clock, mesh) -> list[dict]:
    batch = args.overhead_batch
    base = override(config_lib.get_config(), model=PROBE, batch_size=batch, progress_bar="false")
    data = synthetic_data(mesh, 4096)
    images, labels = data
    rows = []
    n_steps, windows = (300, 3) if args.smoke else (2000, 5)

    def add(name, k, times, extra=None):
        rows.append(
            {
                "path": name,
                "k": k,
                "us_per_step": statistics.median(times) * 1e6,
                "min_us": min(times) * 1e6,
                "max_us": max(times) * 1e6,
                "spread": spread(times),
                "windows": f"{len(times)}x{n_steps}",
                **(extra or {}),
            }
        )
        print(f"  {name} k={k}: {rows[-1]['us_per_step']:.1f} us/step", flush=True)

    print(f"\n## Host overhead per step ({PROBE}, batch {batch})\n", flush=True)
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
            compiled, state, window, data, perm, k, max(k, 16), n_steps, windows
        )
        add(f"({'b' if k == 1 else 'c'}) train chunk", k, times)
    # (d) The full runner: epoch_seconds of the epochs after the first (training only: dispatch,
    # log steps, checkpoints, the wait for the device; evaluation excluded), and its train windows.
    examples = args.overhead_examples or (batch * 100 if args.smoke else 0)
    for k in (1, 100) if args.runner_overhead else ():
        if clock.left() < 30:
            rows.append({"path": "(d) runner train_and_evaluate", "k": k, "skipped": "deadline"})
            continue
        config = override(
            base,
            steps_per_call=k,
            num_epochs=3 if args.smoke else 4,
            max_train_examples=examples,
            **data_overrides(args),
        )
        out = run_runner(config, None, clock.left(), False)
        spe = steps_per_epoch(out["records"])
        epochs, windows_s = epoch_step_s(out["records"]), window_step_s(out["records"], batch)
        rows.append(
            {
                "path": "(d) runner train_and_evaluate",
                "k": k,
                "us_per_step": statistics.median(epochs) * 1e6 if epochs else None,
                "min_us": min(epochs) * 1e6 if epochs else None,
                "max_us": max(epochs) * 1e6 if epochs else None,
                "spread": spread(epochs) if epochs else None,
                "windows": f"{len(epochs)}x{spe} (epochs)",
                "window_us_per_step": statistics.median(windows_s) * 1e6 if windows_s else None,
                "runner_wall_s": out["wall_s"],
            }
        )
        print(
            f"  (d) runner k={k}: {rows[-1]['us_per_step'] or float('nan'):.1f} us/step", flush=True
        )
    print(
        "\n### Host overhead per train step (us; median window; runner: epochs after the first,"
        " window_us: its train records, which leave out the wait at each log step)\n"
    )
    print(
        table(
            rows, ["path", "k", "us_per_step", "min_us", "max_us", "windows", "window_us_per_step"]
        ),
        flush=True,
    )
    return rows


# ---------------------------------------------------------------------------------------------
# Time to accuracy.


def data_overrides(args) -> dict[str, str]:
    out = {}
    if args.data_dir:
        out["data_dir"] = args.data_dir
    if args.idx_dir:
        out["idx_dir"] = args.idx_dir
    if args.data_dir or args.idx_dir:
        out["download"] = "false"
    return out


def train_examples(config) -> int:
    """Training examples the runner uses (validation held out, then the first max_train_examples)."""
    n = N_TRAIN - config.validation_examples
    return min(n, config.max_train_examples) if config.max_train_examples else n


def estimate_s(config, throughput_rows, platform) -> float | None:
    """Full-run training seconds from the closest throughput row (same model, dtype, platform k)."""
    k = programs.steps_per_call(config, platform)
    rows = [
        r
        for r in throughput_rows
        if "skipped" not in r
        and r["model"] == config.model
        and r["dtype"] == config.compute_dtype
        and r["k"] == k
    ]
    if not rows:
        return None
    r = min(rows, key=lambda r: abs(math.log(r["batch"] / config.batch_size)))
    return (
        config.num_epochs
        * (train_examples(config) // config.batch_size)
        * config.batch_size
        / r["images_per_s"]
        + r["compile_s"]
    )


def tta_section(args, clock, recipes, throughput_rows) -> list[dict]:
    platform = jax.devices()[0].platform
    targets = dict(TARGETS)
    for item in args.target:
        name, _, value = item.partition("=")
        targets[name] = float(value)
    wanted = args.recipes.split(",") if args.recipes else None
    budget_end = clock.elapsed() + min(args.budget_s, max(clock.left(), 0))
    plan = []
    for name, config in recipes:
        if wanted is not None and name not in wanted:
            continue
        row = {
            "recipe": name,
            "model": config.model,
            "batch": config.batch_size,
            "dtype": config.compute_dtype,
            "target": targets.get(name),
        }
        if name not in targets:
            plan.append((row, None, "no target for this recipe (TARGETS or --target NAME=ACC)"))
            continue
        extra = {"progress_bar": "false", **data_overrides(args)}
        if args.tta_model != "recipe":
            extra["model"] = args.tta_model
            row["model"] = args.tta_model
        if args.smoke:
            extra.update(
                num_epochs=1,
                max_train_examples=args.smoke_examples,
                warmup_epochs=min(config.warmup_epochs, 1.0),
            )
        try:
            config = override(config, **extra)
        except UserError as e:
            plan.append((row, None, str(e)))
            continue
        row.update(
            epochs=config.num_epochs,
            k=programs.steps_per_call(config, platform),
            est_full_s=estimate_s(config, throughput_rows, platform),
        )
        plan.append((row, config, None))
    # `fast` first, then the cheapest estimates (unknown last).
    plan.sort(
        key=lambda p: (
            p[0]["recipe"] != "fast",
            p[0].get("est_full_s") is None,
            p[0].get("est_full_s") or 0,
        )
    )
    rows = []
    print(f"\n## Time to accuracy (budget {budget_end - clock.elapsed():.0f} s)\n", flush=True)
    for row, config, reason in plan:
        left = budget_end - clock.elapsed()
        if reason is None and left < args.min_run_s:
            reason = f"budget spent ({left:.0f} s left)"
        est = row.get("est_full_s")
        if reason is None and est is not None and est / row["epochs"] > left:
            reason = f"one epoch is estimated at {est / row['epochs']:.0f} s, {left:.0f} s left"
        if reason is not None:
            rows.append({**row, "status": "skipped", "skipped": reason})
            print(f"  {row['recipe']}: skipped ({reason})", flush=True)
            continue
        out = run_runner(config, row["target"], left, not args.full_runs)
        rows.append({**row, **summarize_tta(out, config, row["target"])})
        r = rows[-1]
        print(
            f"  {row['recipe']}: {r['status']}, target {row['target']} "
            f"{'reached at epoch ' + str(r['epoch']) if r['reached'] else 'not reached'}, "
            f"best test accuracy {r['best_test_accuracy']}, wall {out['wall_s']:.1f} s",
            flush=True,
        )
    print(
        "\n### Time to accuracy (s; wall: from the call, data + compilation + evaluation included;"
        " train: sum of epoch_seconds; steady: without compilation)\n"
    )
    print(
        table(
            rows,
            [
                "recipe",
                "model",
                "batch",
                "dtype",
                "k",
                "target",
                "status",
                "reached",
                "epoch",
                "wall_to_target_s",
                "train_to_target_s",
                "steady_to_target_s",
                "best_test_accuracy",
                "epochs_run",
                "est_full_s",
            ],
        ),
        flush=True,
    )
    return rows


def summarize_tta(out, config, target) -> dict[str, Any]:
    evals = [r for r in out["records"] if r["type"] == "eval"]
    hit = next((r for r in evals if r["test_accuracy"] >= target), None)
    per_epoch = epoch_step_s(out["records"])
    per_window = window_step_s(out["records"], config.batch_size)
    step_s = statistics.median(per_epoch or per_window) if per_epoch or per_window else None
    result = {
        "status": out["status"],
        "reached": hit is not None,
        "epochs_run": len(evals),
        "best_test_accuracy": max((r["test_accuracy"] for r in evals), default=None),
        "final_test_accuracy": evals[-1]["test_accuracy"] if evals else None,
        "run_wall_s": out["wall_s"],
        "steady_step_ms": step_s * 1e3 if step_s else None,
    }
    if hit is not None:
        train_s = sum(r["epoch_seconds"] for r in evals if r["step"] <= hit["step"])
        result.update(
            epoch=hit["epoch"],
            wall_to_target_s=out["hit_s"],
            train_to_target_s=train_s,
            steady_to_target_s=hit["step"] * step_s if step_s else None,
            other_to_target_s=out["hit_s"] - train_s if out["hit_s"] is not None else None,
        )
    return result


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--smoke", action="store_true", help="the same code paths on CPU in seconds (tiny sizes)"
    )
    p.add_argument(
        "--results",
        default=str(ROOT / "benchmarks" / "results.jsonl"),
        help="JSON lines file to append to",
    )
    p.add_argument("--sections", default="peak,overhead,throughput,time_to_accuracy")
    p.add_argument(
        "--deadline-s",
        type=float,
        default=450,
        help="stop starting new work after this (s from start)",
    )
    p.add_argument("--throughput-budget-s", type=float, default=200)
    p.add_argument(
        "--budget-s", type=float, default=180, help="seconds for the time-to-accuracy runs"
    )
    p.add_argument(
        "--min-run-s", type=float, default=15, help="do not start a recipe with less budget left"
    )
    p.add_argument(
        "--models",
        default="",
        help="comma-separated model names (default: the recipes' models + seed_cnn)",
    )
    p.add_argument("--batches", default="64,256,1024,4096")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument(
        "--steps-per-call",
        default="",
        help="comma-separated k values (default: 1 and the platform's)",
    )
    p.add_argument("--windows", type=int, default=5)
    p.add_argument(
        "--window-s", type=float, default=0.25, help="target length of one timing window"
    )
    p.add_argument("--max-window-steps", type=int, default=2000)
    p.add_argument("--window-steps", type=int, default=3, help="steps per window in --smoke")
    p.add_argument("--synthetic-examples", type=int, default=N_TRAIN)
    p.add_argument("--recipes", default="", help="comma-separated recipe names (default: all)")
    p.add_argument(
        "--target", action="append", default=[], help="NAME=ACC, a recipe's target test accuracy"
    )
    p.add_argument(
        "--full-runs",
        action="store_true",
        help="train every epoch instead of stopping at the target",
    )
    p.add_argument("--smoke-examples", type=int, default=640)
    p.add_argument(
        "--tta-model",
        default=None,
        help="run the recipes with this model instead ('recipe': their own; --smoke: the probe)",
    )
    p.add_argument("--overhead-batch", type=int, default=64)
    p.add_argument(
        "--overhead-examples", type=int, default=0, help="runner rows: training examples (0: all)"
    )
    p.add_argument("--no-runner-overhead", dest="runner_overhead", action="store_false")
    p.add_argument(
        "--data-dir", default="", help="tfds data dir for the runner (default: the config's)"
    )
    p.add_argument(
        "--idx-dir", default="", help="IDX folder for the runner (default: the config's)"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.batches = "8" if args.batches == p.get_default("batches") else args.batches
        args.models = args.models or PROBE
        args.windows = 3 if args.windows == p.get_default("windows") else args.windows
        args.synthetic_examples = (
            512 if args.synthetic_examples == N_TRAIN else args.synthetic_examples
        )
        args.recipes = args.recipes or "fast"
        args.tta_model = args.tta_model or PROBE
        args.budget_s = min(args.budget_s, 60)
        args.min_run_s = 0
    args.tta_model = args.tta_model or "recipe"
    return args


def main(argv=None):
    args = parse_args(argv)
    clock = Clock(args.deadline_s)
    sections = set(args.sections.split(","))
    models.MODELS[PROBE] = OverheadProbe
    try:
        info = device_info()
        print(
            f"# fashion_jax on {info['device_count']} x {info['device_kind']} ({info['platform']}), "
            f"jax {info['jax']}, jaxlib {info['jaxlib']}"
            + (f", CUDA {info['cuda']}" if "cuda" in info else "")
            + (" [smoke]" if args.smoke else ""),
            flush=True,
        )
        mesh = sharding.make_mesh()
        recipes = recipe_configs(args)
        result: dict[str, Any] = {
            "benchmark": "accelerator",
            "machine": {**machine(), "load_avg": os.getloadavg()},
            "device": info,
            "smoke": args.smoke,
            "args": vars(args),
        }
        peak = peak_section(args, info)
        result["peak"] = peak["rows"]
        peaks = {"used": {r["dtype"]: r["used_tflops"] for r in peak["rows"]}}
        seconds = result["section_seconds"] = {"peak": clock.elapsed()}
        if "overhead" in sections:
            t = clock.elapsed()
            result["overhead"] = overhead_section(args, clock, mesh)
            seconds["overhead"] = clock.elapsed() - t
        if "throughput" in sections:
            t = clock.elapsed()
            result["throughput"], result["compile"] = throughput_section(
                args, clock, mesh, peaks, recipes
            )
            seconds["throughput"] = clock.elapsed() - t
        if "time_to_accuracy" in sections:
            t = clock.elapsed()
            result["time_to_accuracy"] = tta_section(
                args, clock, recipes, result.get("throughput", [])
            )
            seconds["time_to_accuracy"] = clock.elapsed() - t
    finally:
        models.MODELS.pop(PROBE, None)
    result["total_s"] = clock.elapsed()
    result["machine"]["load_avg_end"] = os.getloadavg()
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(result, default=str) + "\n")
    print(
        "\nseconds per section: "
        + ", ".join(f"{k} {v:.0f}" for k, v in result["section_seconds"].items())
    )
    print(f"recorded in {path} ({result['total_s']:.0f} s in all)")


if __name__ == "__main__":
    main()
