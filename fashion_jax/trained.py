"""A trained workdir read back: its config and its newest valid checkpoint, for predict, report,
export and research code (`fashion_jax.load_trained`). Read-only: safe beside a running trainer."""

from __future__ import annotations

import functools
import sys

import jax

from fashion_jax import checkpoints, fingerprints, optimizers, sharding, steps
from fashion_jax import config as config_lib
from fashion_jax import workdir as workdir_lib
from fashion_jax.errors import CheckpointError


def load_trained(workdir):
    """(config, state): a workdir's config and its newest valid checkpoint, on this process' devices.

    Read-only: safe beside a running trainer. The model is rebuilt from config.json's `model` and
    `model_kwargs` (a "module:Name" file looked for in `model_dir`, then the workdir, then
    sys.path), with the image shape and classes of its dataset (`data.describe`). Raises
    CheckpointError when the workdir holds no run or no readable checkpoint. The state's params
    are float32 pytrees; `state.apply_fn` is the model's pure apply. Prints one `warning:` line
    (stderr) when the model's code differs from the code that trained (model.json).
    """
    workdir = workdir_lib.check_path(workdir)
    config = workdir_lib.load_config(workdir)
    if not (workdir / workdir_lib.CHECKPOINTS).is_dir():
        raise CheckpointError(f"{workdir} has no checkpoints yet: train first.")
    repl = sharding.replicated(sharding.make_mesh())
    info = workdir_lib.read_dataset_info(workdir)  # None for runs older than dataset.json.
    shapes = (
        {} if info is None else {"image_shape": info.image_shape, "num_classes": info.num_classes}
    )
    # Shapes only: the schedule's length does not change the optimizer state's structure.
    init = functools.partial(
        steps.create_train_state,
        config=config,
        total_steps=1 << 20,
        search_dirs=(str(workdir),),
        **shapes,
    )
    abstract = checkpoints.abstract_like(init, jax.random.key(0), repl)
    ckpt = checkpoints.Checkpoints(
        workdir, config.keep_checkpoints, config_lib.state_structure(config), read_only=True
    )
    try:
        restored = ckpt.restore_latest(abstract)
    finally:
        ckpt.close()
    if restored is None:
        raise CheckpointError(
            f"{workdir}/{workdir_lib.CHECKPOINTS} holds no readable checkpoint: train first."
        )
    state, meta = restored
    warn_changed_code(workdir, config)
    if meta.get("total_steps"):  # The optimizer of the run's own length: continuing matches it.
        state = state.replace(tx=optimizers.make_optimizer(config, int(meta["total_steps"])))
    return config, state


def warn_changed_code(workdir, config) -> None:
    """One `warning:` line when the code that builds `config.model` now differs from the code
    recorded in WORKDIR/model.json (nothing for runs older than it)."""
    recorded = workdir_lib.read_model_info(workdir)
    if not isinstance(recorded, dict) or not isinstance(recorded.get("code"), dict):
        return
    now = fingerprints.code(config, (str(workdir),))
    changes = fingerprints.code_differences(recorded["code"], now)
    if changes:
        print(
            f"warning: the model's code changed since the run in {workdir} was trained "
            f"({'; '.join(changes)}); its weights are used with the code as it is now. Restore "
            "the code, or retrain with --restart.",
            file=sys.stderr,
            flush=True,
        )
