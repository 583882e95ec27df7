"""Populations: many members (seeds x hyperparameters) trained as one compiled program.

    summaries = train_population([config_a, config_b, ...], ["runs/a", "runs/b", ...])

The members share everything that fixes the program's shapes (model, data, batch size, length,
augmentations switched on); they differ in their seed (initialization, data order, step keys)
and in the values of the `TRACED` keys, which enter the program as per-member arrays. Their
TrainStates are stacked on a leading member axis and stepped by `jax.vmap` of the runner's own
step (`programs.make_one_step`), the optimizer rebuilt inside the program from each member's
values. Layout: the member axis is replicated and every member's batch is sharded over the
mesh's data axis, exactly like a run alone, so any member count runs on any device count.

I/O is the runner's: each member has its own ordinary workdir and `outputs.Outputs`, and a
`train.Run` over the shared programs, so its checkpoints, metrics, summary and report are those
of a run that trained alone (`predict`, `report`, `export` work on it). A killed population
resumes from the newest step every member holds. A member whose loss becomes NaN stops (its
summary says so); the others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp

from fashion_jax import config as config_lib
from fashion_jax import data as data_lib
from fashion_jax import epochs, fingerprints, optimizers, programs, sharding, steps, train
from fashion_jax import population_loop as loop
from fashion_jax import workdir as workdir_lib
from fashion_jax.errors import ConfigError
from fashion_jax.outputs import Outputs
from fashion_jax.preemption import Preempted, StopFlag

# Keys whose values may differ between the members of one program (besides the seed).
TRACED = ("learning_rate", "weight_decay", "momentum", "label_smoothing", "augment_erasing")
# Of those, the ones whose 0 builds another optimizer state than any other value.
ZERO_CHANGES_STATE = ("weight_decay", "momentum")
# How the members' steps make one program (`_population_step`).
LAYOUTS = ("vmap", "unrolled")
# Keys that name where the data and outputs live or how progress is shown, not the training.
_FREE = ("seed", "progress_bar", "model_dir", "continue_with_changed_code")


def varying(configs) -> dict[str, list]:
    """{key: [value per member]} for the `TRACED` keys whose values differ between `configs`.
    Raises ConfigError, in one line, for any other key that differs (it changes the program)."""
    base, out = configs[0], {}
    for key in base.keys():
        values = [c[key] for c in configs]
        if all(json.dumps(v, default=str) == json.dumps(values[0], default=str) for v in values):
            continue
        if key in _FREE:
            continue
        if key not in TRACED:
            raise ConfigError(
                f"the members differ in {key} ({', '.join(map(str, dict.fromkeys(values)))}), "
                "which changes the compiled program; within one population only the seed and "
                f"{', '.join(TRACED)} may differ. Train such a grid one run after another "
                "(without --together)."
            )
        if key in ZERO_CHANGES_STATE and len({config_lib.is_off(v) for v in values}) > 1:
            raise ConfigError(
                f"the members' {key} values mix 0 and non-zero ({', '.join(map(str, values))}), "
                "which builds different optimizer states; train the 0 members in a population "
                "of their own (or without --together)."
            )
        out[key] = [float(v) for v in values]
    return out


class _Overlay:
    """A config whose `values` keys read as the given (traced) values: what one member's
    optimizer and train options are built from inside the population program."""

    def __init__(self, config, values: dict[str, Any]):
        self._config, self._values = config, values

    def __getattr__(self, key):
        return self._values[key] if key in self._values else getattr(self._config, key)

    __getitem__ = __getattr__

    def get(self, key, default=None):
        return self._values.get(key, self._config.get(key, default))


@dataclasses.dataclass
class Population:
    """The compiled programs of a population (stacked over members) and its members' values."""

    programs: programs.Programs
    values: dict[str, jax.Array]  # TRACED key -> float32[M]
    members: int
    layout: str = "vmap"
    steps: tuple[int, int] = (0, 0)  # (steps per epoch, total steps)


def default_layout(platform: str) -> str:
    """ "unrolled" on CPU (a member's step is its lone run's program: the same bits, and batching
    gains little on a few cores), "vmap" on accelerators (one batched program: the speed)."""
    return "unrolled" if platform == "cpu" else "vmap"


def build(
    configs, mesh, splits, info, total_steps: int, search_dirs=(), layout: str | None = None
) -> Population:
    """Compiles a population's programs: init, epoch orders and the train chunk over the
    stacked members (`layout`: `LAYOUTS`, default `default_layout`), the shared evaluators;
    raises ConfigError for members that cannot share a program, or that would not fit in the
    devices' memory (estimated before allocating)."""
    base, m = configs[0], len(configs)
    layout = layout or default_layout(jax.devices()[0].platform)
    if layout not in LAYOUTS:
        raise ConfigError(f"layout {layout!r}: choose one of {', '.join(LAYOUTS)}.")
    values = {k: jnp.asarray(v, jnp.float32) for k, v in varying(configs).items()}
    repl, by_batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    alone = programs.build(base, mesh, splits, info, total_steps, search_dirs)
    keys = jnp.stack([jax.random.split(jax.random.key(c.seed), 3) for c in configs])
    init_keys, step_keys, data_keys = keys[:, 0], keys[:, 1], keys[:, 2]
    create = lambda key: steps.create_train_state(
        key,
        base,
        total_steps,
        image_shape=info.image_shape,
        num_classes=info.num_classes,
        search_dirs=tuple(search_dirs),
    )
    init = jax.jit(jax.vmap(create), out_shardings=repl)
    stacked = jax.eval_shape(init, init_keys)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), stacked
    )

    member_step = _member_step(base, total_steps, by_batch, stacked.tx)
    vstep = _population_step(member_step, m, layout)
    chunk = jax.jit(
        programs.chunk_of(vstep, alone.steps_per_call),
        in_shardings=(repl,) * 7 + (None, None),
        out_shardings=(repl, repl),
        donate_argnums=(0, 1),
    )
    n_train = len(splits["train"].labels)
    perm = jax.ShapeDtypeStruct((m, n_train), jnp.int32, sharding=repl)
    window = loop.new_windows([epochs.LoopState()] * m, mesh)
    compiled = chunk.lower(
        abstract, window, alone.images, alone.labels, perm, step_keys, values, 0, 1
    ).compile()
    _check_memory(compiled, m)
    progs = dataclasses.replace(
        alone,
        init=lambda: init(init_keys),
        abstract_state=abstract,
        epoch_perm=jax.jit(
            lambda epoch: jax.vmap(
                lambda k: jax.random.permutation(jax.random.fold_in(k, epoch), n_train)
            )(data_keys),
            out_shardings=repl,
        ),
        train_chunk=lambda state, window, images, labels, perm, index, n: compiled(
            state, window, images, labels, perm, step_keys, values, index, n
        ),
    )
    return Population(progs, values, m, layout)


def _member_step(base, total_steps: int, by_batch, base_tx):
    """One member's train step inside the population program: the runner's step
    (`programs.make_one_step`) with the optimizer and options built from the member's values."""

    def member_step(index, state, window, images, labels, perm, step_key, member_values):
        member = _Overlay(base, member_values)
        state = state.replace(tx=optimizers.make_optimizer(member, total_steps))
        one = programs.make_one_step(member, base.batch_size, by_batch)
        state, window = one(index, state, window, images, labels, perm, step_key)
        return state.replace(tx=base_tx), window

    return member_step


def _population_step(member_step, members: int, layout: str):
    """The step of all members: `jax.vmap` of `member_step` ("vmap": batched operations, which
    may round differently from a lone run), or `member_step` once per member in the same program
    ("unrolled": each member's operations are its lone run's)."""
    if layout == "vmap":
        return jax.vmap(member_step, in_axes=(None, 0, 0, None, None, 0, 0, 0))

    def unrolled(index, state, window, images, labels, perms, step_keys, values):
        outs = [
            member_step(
                index,
                loop.member(state, i),
                loop.member(window, i),
                images,
                labels,
                perms[i],
                step_keys[i],
                {k: v[i] for k, v in values.items()},
            )
            for i in range(members)
        ]
        return loop.stack([o[0] for o in outs]), loop.stack([o[1] for o in outs])

    return unrolled


def _check_memory(compiled, members: int) -> None:
    """Refuses, with the estimate, a population whose program needs more memory than the device
    (or, on CPU, the machine) has: XLA's own figures for the compiled program."""
    try:
        stats = compiled.memory_analysis()
        need = sum(
            getattr(stats, f, 0) or 0
            for f in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")
        )
    except Exception:  # Backends without the analysis: nothing to check against.
        return
    device = jax.devices()[0]
    limit = (device.memory_stats() or {}).get("bytes_limit") if device.platform != "cpu" else None
    if limit is None:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > 0.9 * limit:
        raise ConfigError(
            f"{members} members need about {need / 2**30:.1f} GiB on {device.platform} for one "
            f"program, more than the {limit / 2**30:.1f} GiB there; train fewer members at once "
            "(e.g. several sweeps over parts of the grid) or without --together."
        )


def train_population(
    configs,
    workdirs,
    *,
    data: dict | None = None,
    report: bool = True,
    ready=None,
    layout: str | None = None,
) -> list[dict[str, Any]]:
    """Trains `configs` (one per member, sharing the program's shapes: see the module docstring)
    as one program, member i in `workdirs[i]`, each resumed from its own checkpoints. `data`:
    your own splits, as for `train.train_and_evaluate`. `layout`: "vmap" or "unrolled" (see
    `_population_step`; default `default_layout`). `ready()`, if given, is called once the
    program is compiled and known to fit, before anything is written. Returns each member's
    summary (a member stopped by a non-finite loss: {"stopped": the reason, ...}). Raises
    UserError subclasses for bad input (nothing written) and preemption.Preempted after a clean
    save when SIGTERM/SIGINT arrived."""
    configs, workdirs, mesh = _check_members(configs, workdirs, data)
    splits, info = data_lib.load_data(configs[0], data)
    described = fingerprints.data(splits, info)
    for workdir in workdirs:  # A member's run on other data: refused before compiling.
        workdir_lib.check_data(workdir, described)
    pop = _compile(configs, workdirs, mesh, splits, info, layout)
    if ready is not None:
        ready()
    is_main = jax.process_index() == 0
    with contextlib.ExitStack() as held, StopFlag() as stop:
        for config, workdir in zip(configs, workdirs):
            workdir_lib.create(workdir)
            if is_main:
                held.enter_context(workdir_lib.Lock(workdir))
            workdir_lib.check_previous(workdir, config, False, is_main)
        runs = [
            train.Run(c, pop.programs, Outputs(w, c), *pop.steps) for c, w in zip(configs, workdirs)
        ]
        try:
            state, loops = loop.restore_or_init(runs, pop)
            if stop.requested(sync_point=True):
                raise Preempted(stop.signum, int(state.step[0]), saved=False)
            one = jax.tree.map(  # A member's state shapes: model.json's parameter structure.
                lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), pop.programs.abstract_state
            )
            for run in runs:
                run.out.begin(
                    run.config, info, int(state.step[0]), abstract_state=one, data=described
                )
            state, loops, records, stopped = loop.train(runs, pop, state, loops, stop)
        finally:
            for run in runs:
                run.out.close()
        finished = zip(runs, loops, records)
        return [
            loop.finish(r, loop.member(state, i), lp, rec, stopped.get(i), splits, info, report)
            for i, (r, lp, rec) in enumerate(finished)
        ]


def _check_members(configs, workdirs, data):
    """(configs, workdirs, mesh) after each member's checks (`train.check_inputs`, distinct
    workdirs, what may differ, a previous run in a member's folder); nothing is written."""
    if len(configs) != len(workdirs) or not configs:
        raise ConfigError("train_population needs one workdir per config, and at least one.")
    checked = [train.check_inputs(c, w, data) for c, w in zip(configs, workdirs)]
    configs, workdirs, mesh = [c[0] for c in checked], [c[1] for c in checked], checked[0][2]
    if len(set(map(str, workdirs))) < len(workdirs):
        raise ConfigError("two members share a workdir; give each its own.")
    varying(configs)
    for config, workdir in zip(configs, workdirs):
        if workdir.is_dir():  # Before the data and the compilation: a wrong folder fails fast.
            workdir_lib.check_previous(workdir, config, False, is_main=False)
    return configs, workdirs, mesh


def _compile(configs, workdirs, mesh, splits, info, layout) -> Population:
    """The population's programs for its data, with its (steps per epoch, total steps)."""
    spe = len(splits["train"].labels) // configs[0].batch_size
    if spe == 0:
        raise ConfigError(
            f"batch_size = {configs[0].batch_size} is larger than the "
            f"{len(splits['train'].labels)} training examples."
        )
    total = spe * configs[0].num_epochs
    pop = build(configs, mesh, splits, info, total, (str(workdirs[0]),), layout)
    pop.steps = (spe, total)
    return pop
