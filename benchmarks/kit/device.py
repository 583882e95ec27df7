"""The device: kind, versions (jax, jaxlib, plugins, CUDA) and peak TFLOP/s (table and matmul)."""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import math
import os
import re
import time
from typing import Any

import jax
import jax.extend  # Not imported by `import jax`; the backend's platform version lives there.
import jax.numpy as jnp

from common import table

# Dense peak TFLOP/s per device (one JAX device), by a regular expression on the lower-cased
# device_kind; the first match wins. "float32" is what a float32 matmul runs at with JAX's default
# precision: TF32 tensor cores on NVIDIA Ampere and later, one bfloat16 pass on TPU
# (jax.default_matmul_precision). Sources: NVIDIA datasheets (H100/H200 SXM: bf16 989.4, tf32
# 494.7, fp32 vector 66.9; H100 NVL/H200 NVL: bf16 835.5, tf32 417.5, fp32 60 (the datasheets'
# figures with sparsity, halved); H100 PCIe: 756 / 378 / 51.2; A100: 312 / 156 / 19.5; L4: 121 /
# 60 / 30.3), Google Cloud TPU pages (bf16 per chip: v4 275, v5e 197, v5p 459, v6e 918). Unknown
# devices (and CPUs) use the measured matmul.
PEAKS = [
    (r"h[12]00 nvl", {"bfloat16": 835.5, "float32": 417.5, "float32_vector": 60.0}),
    (
        r"\bgh200\b|\bh200\b|h100 80gb hbm3|h100 sxm",
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


def table_peak(device_kind: str) -> dict[str, float] | None:
    """{"bfloat16": TFLOP/s, "float32": ...} of a known device kind, else None."""
    kind = device_kind.lower()
    for pattern, peaks in PEAKS:
        if re.search(pattern, kind):
            return peaks
    return None


def device_info() -> dict[str, Any]:
    """What the figures were measured on: platform, kind, counts, versions, plugins, CUDA."""
    devices = jax.devices()
    d = devices[0]
    info = {
        "platform": d.platform,
        "device_kind": d.device_kind,
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "jax": jax.__version__,
        "jaxlib": md.version("jaxlib"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    with contextlib.suppress(Exception):
        info["platform_version"] = jax.extend.backend.get_backend().platform_version
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
        env = jax.print_environment_info(return_string=True) or ""
        for key, pattern in (
            ("nvidia_smi_cuda", r"CUDA Version:\s*([\d.]+)"),
            ("driver", r"Driver Version:\s*([\d.]+)"),
        ):
            m = re.search(pattern, env)
            if m:
                cuda[key] = m.group(1)
    if cuda:
        info["cuda"] = cuda
    return info


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


def peak_section(ctx) -> None:
    """Rows "peak": per dtype the table's and the measured matmul's TFLOP/s, and the one used."""
    info = ctx.results.data["device"]
    known = table_peak(info["device_kind"])
    cpu = info["platform"] == "cpu"
    n, reps = (512, 2) if ctx.args.smoke else ((1024, 4) if cpu else (8192, 20))
    print("\n## Peak per device (TFLOP/s; float32 at JAX's default matmul precision)\n")
    for dt in ("float32", "bfloat16"):
        measured = measure_matmul(dt, n, reps)
        row = {
            "dtype": dt,
            "table_tflops": known.get(dt) if known else None,
            "matmul_tflops": measured,
            "matmul_n": n,
            "used_tflops": known[dt] if known else measured,
            "source": f"table ({info['device_kind']})" if known else "measured matmul",
        }
        ctx.results.add("peak", row)
        ctx.peaks[dt] = row["used_tflops"]
    columns = ["dtype", "table_tflops", "matmul_tflops", "matmul_n", "used_tflops", "source"]
    print(table(ctx.results.data["peak"], columns), flush=True)
