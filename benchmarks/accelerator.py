"""One command that measures an accelerator (or this CPU) for fashion_jax, in one short call.

  python benchmarks/accelerator.py                  # the first call: what matters most, ~5 minutes
  python benchmarks/accelerator.py --plan full      # the full sweep, a second call, ~7 minutes
  python benchmarks/accelerator.py --smoke          # the same code paths on CPU in about a minute
  python benchmarks/accelerator.py --sections throughput --models seed_cnn --batches 64

Sections, in this order (benchmarks/kit/: one module each):

1. peak: the device's peak from a table of known devices, and a measured large matmul.
2. overhead: host overhead per train step with a model of negligible compute (kit/probe.py):
   the bare jitted train step, the runner's compiled chunk at 1 and 100 steps per call, and the
   whole runner `train_and_evaluate` at 1 and 100.
3. throughput: images/s, compile time, FLOPs per step (XLA's cost analysis of the compiled
   program), achieved TFLOP/s and MFU of seed_cnn and each recipe's model through the runner's own
   compiled chunk over device-resident synthetic data, float32 and bfloat16.
4. time_to_accuracy: the real runner on each recipe with a target test accuracy (common.TARGETS),
   stopped at its target or when its budget is spent.
5. population: N members trained together as one vmapped program against the same N one after
   another (images/s of all members), seed_cnn and the 5-epoch recipe's network
   (kit/population.py; benchmarks/population.py is the CPU table).

Plans: `first` (the default) measures each model at its recipe's batch size and the platform's
default steps per call, time to 0.90 for `fast`, and the overhead paths, in about 5 minutes;
`full` sweeps batches 64-4096, 1 and 100 steps per call and every recipe in about 7; `smoke` runs
everything at tiny sizes. Any option below overrides the plan's value.

Nothing is lost: the results line (JSON, the last line of --results) is rewritten after every
row; a section that fails is recorded as failed with a one-line reason and the next one runs; a
SIGTERM (a `timeout`) records what there is and then ends the kit by that signal. Exit status: 0,
or 1 if a section failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# isort: off
import fashion_jax  # noqa: E402,F401  (first, before JAX starts: its XLA:CPU flag, README "Speed")

# isort: on
from common import TARGETS, machine  # noqa: E402
from fashion_jax import models, sharding  # noqa: E402
from kit import probe  # noqa: E402
from kit.device import device_info, peak_section  # noqa: E402
from kit.overhead import overhead_section  # noqa: E402
from kit.population import population_section  # noqa: E402
from kit.results import Results, Terminated, die_by, install_signal_handlers, run_section  # noqa: E402
from kit.shared import N_TRAIN, Clock, Context, one_line, recipe_configs  # noqa: E402
from kit.throughput import throughput_section  # noqa: E402
from kit.time_to_acc import time_to_acc_section  # noqa: E402

# The probe model under its name; once models load from an import path, the overhead section's
# config says `model = "benchmarks/kit/probe.py:OverheadProbe"` instead of this line.
models.MODELS[probe.NAME] = probe.OverheadProbe

SECTIONS = {
    "peak": peak_section,
    "overhead": overhead_section,
    "throughput": throughput_section,
    "time_to_accuracy": time_to_acc_section,
    "population": population_section,
}
DEFAULT_RESULTS = Path("~/fashion_jax_results/accelerator.jsonl")
RESULTS_ENV = "FASHION_JAX_RESULTS"

# Each plan's values for the options left unset. Budgets are seconds; the deadline counts from the
# start and no new work starts after it. The first plan leaves a 15-minute allocation time for the
# full plan or a rerun.
PLANS = {
    "first": {
        "deadline_s": 270,
        "throughput_budget_s": 90,
        "budget_s": 120,
        "models": "",
        "batches": "recipe",
        "steps_per_call": "default",
        "recipes": "fast",
        "windows": 5,
        "window_s": 0.25,
        "max_window_steps": 2000,
        "synthetic_examples": N_TRAIN,
        "overhead_steps": 1000,
        "overhead_epochs": 3,
        "overhead_examples": 19200,
        "min_run_s": 15,
        "time_to_acc_model": "recipe",
        "population_members": "1,4,16,64",
        "population_steps": 100,
        "population_models": "seed_cnn,convnet_5ep",
    },
    "full": {
        "deadline_s": 420,
        "throughput_budget_s": 220,
        "budget_s": 150,
        "models": "",
        "batches": "64,256,1024,4096",
        "steps_per_call": "sweep",
        "recipes": "",
        "windows": 3,
        "window_s": 0.2,
        "max_window_steps": 2000,
        "synthetic_examples": N_TRAIN,
        "overhead_steps": 2000,
        "overhead_epochs": 4,
        "overhead_examples": 0,
        "min_run_s": 15,
        "time_to_acc_model": "recipe",
        "population_members": "1,2,4,8,16,32,64,128",
        "population_steps": 200,
        "population_models": "seed_cnn,convnet_5ep",
    },
    "smoke": {
        "deadline_s": 300,
        "throughput_budget_s": 120,
        "budget_s": 60,
        "models": probe.NAME,
        "batches": "8",
        "steps_per_call": "1,3",
        "recipes": "fast",
        "windows": 3,
        "window_s": 1.0,
        "max_window_steps": 3,
        "synthetic_examples": 512,
        "overhead_steps": 300,
        "overhead_epochs": 3,
        "overhead_examples": 6400,
        "min_run_s": 0,
        "time_to_acc_model": probe.NAME,
        "population_members": "2",
        "population_steps": 2,
        "population_models": "seed_cnn",
    },
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--plan", choices=sorted(PLANS), default="first")
    p.add_argument("--smoke", action="store_true", help="--plan smoke: tiny sizes, on CPU")
    p.add_argument(
        "--results",
        default=os.environ.get(RESULTS_ENV) or str(DEFAULT_RESULTS),
        help=f"JSON lines file; the run's line is its last (default ${RESULTS_ENV}, else "
        f"{DEFAULT_RESULTS})",
    )
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument(
        "--fail-sections",
        default="",
        help="make these sections fail at their start (checks that a failure is recorded)",
    )
    p.add_argument("--deadline-s", type=float, help="no new work after this (s from the start)")
    p.add_argument("--throughput-budget-s", type=float)
    p.add_argument("--budget-s", type=float, help="seconds for the time-to-accuracy runs")
    p.add_argument("--min-run-s", type=float, help="do not start a recipe with less budget left")
    p.add_argument("--models", help="comma-separated model names (default: seed_cnn + recipes')")
    p.add_argument("--batches", help="comma-separated batch sizes, or 'recipe'")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument(
        "--steps-per-call", help="comma-separated k values, 'default' (the platform's) or 'sweep'"
    )
    p.add_argument("--windows", type=int, help="timing windows per configuration")
    p.add_argument("--window-s", type=float, help="target length of one timing window")
    p.add_argument("--max-window-steps", type=int)
    p.add_argument("--synthetic-examples", type=int)
    p.add_argument("--recipes", help="comma-separated recipe names ('': all)")
    p.add_argument(
        "--target", action="append", default=[], help="NAME=ACC, a recipe's target test accuracy"
    )
    p.add_argument(
        "--full-runs", action="store_true", help="train every epoch instead of stopping at target"
    )
    p.add_argument("--smoke-examples", type=int, default=640)
    p.add_argument(
        "--time-to-acc-model", help="run the recipes with this model ('recipe': their own)"
    )
    p.add_argument("--overhead-batch", type=int, default=64)
    p.add_argument("--overhead-steps", type=int, help="steps per timing window of paths (a)-(c)")
    p.add_argument("--overhead-epochs", type=int, help="epochs of the runner rows (d), >= 2")
    p.add_argument("--overhead-examples", type=int, help="runner rows (d): examples (0: all)")
    p.add_argument("--no-runner-overhead", dest="runner_overhead", action="store_false")
    p.add_argument("--population-members", help="comma-separated member counts N")
    p.add_argument("--population-steps", type=int, help="timed steps per population row")
    p.add_argument("--population-models", help="networks of the population rows")
    p.add_argument("--data-dir", default="", help="tfds data dir for the runner")
    p.add_argument("--idx-dir", default="", help="IDX folder for the runner")
    args = p.parse_args(argv)
    if args.smoke:
        args.plan = "smoke"
    args.smoke = args.plan == "smoke"
    for key, value in PLANS[args.plan].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sections = [s for s in args.sections.split(",") if s]
    args.fail_sections = [s for s in args.fail_sections.split(",") if s]
    for name in args.sections + args.fail_sections:
        if name not in SECTIONS:
            p.error(f"unknown section {name!r}; the sections are {', '.join(SECTIONS)}")
    for item in args.target:
        name, eq, value = item.partition("=")
        try:
            float(value)
        except ValueError:
            eq = ""
        if not (name and eq):
            p.error(f"--target {item!r}: expected NAME=ACC, e.g. fast={TARGETS['fast']}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    clock = Clock(args.deadline_s)
    install_signal_handlers()
    results = Results(
        args.results,
        {
            "benchmark": "accelerator",
            "plan": args.plan,
            "smoke": args.smoke,
            "machine": {**machine(), "load_avg": os.getloadavg()},
            "args": vars(args),
        },
    )
    print(f"results: {results.path} (its last line, rewritten as rows complete)", flush=True)
    try:
        info = device_info()
        results.set(device=info)
        print(
            f"# fashion_jax on {info['device_count']} x {info['device_kind']} ({info['platform']}), "
            f"jax {info['jax']}, jaxlib {info['jaxlib']}"
            + (f", CUDA {info['cuda']}" if "cuda" in info else "")
            + f" [plan {args.plan}]",
            flush=True,
        )
        ctx = Context(args, clock, sharding.make_mesh(), recipe_configs(), results)
        for name, section in SECTIONS.items():
            if name in args.sections:
                run_section(ctx, name, section)
    except Terminated as e:
        results.set(stopped=str(e), total_s=clock.elapsed())
        print(f"\n{e}: recorded what there is in {results.path}", flush=True)
        die_by(e.signum)
    except Exception as e:  # Before any section (no device, no mesh): say so in the line too.
        results.set(failed=one_line(e), total_s=clock.elapsed())
        raise
    results.set(complete=True, total_s=clock.elapsed())
    results.data["machine"]["load_avg_end"] = os.getloadavg()
    results.write()
    sections = results.data["sections"]
    print(
        "\nseconds per section: "
        + ", ".join(f"{k} {v['seconds']:.0f} ({v['status']})" for k, v in sections.items())
    )
    print(f"recorded in {results.path} ({clock.elapsed():.0f} s in all)")
    return 1 if any(v["status"] == "failed" for v in sections.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
