"""The train loop's pieces, in process: chunking, loop state, K steps per call, the lock, resume rules,
mixed precision."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from fashion_jax import config as config_lib
from fashion_jax import data, epochs, programs, sharding, steps, train
from fashion_jax import workdir as workdir_lib
from fashion_jax.errors import CheckpointError, UserError
from fashion_jax.trained import load_trained


def test_chunks_end_exactly_at_log_checkpoint_and_epoch_boundaries():
    c = config_lib.apply_overrides(
        config_lib.get_config(), {"log_every_steps": "10", "checkpoint_every_steps": "25"}
    )
    step, ends = 0, []
    while step < 60:
        step += epochs.chunk_length(step, epoch_end=60, config=c, k=8)
        ends.append(step)
    assert ends == [8, 10, 18, 20, 25, 30, 38, 40, 48, 50, 58, 60]
    assert epochs.chunk_length(3, epoch_end=60, config=c, k=1) == 1


def test_loop_state_closes_windows_into_epoch_sums_and_round_trips_through_meta():
    loop = epochs.LoopState(window_loss=3.0, window_accuracy=1.5, window_steps=3, train_seconds=2.0)
    assert loop.close_window() == (1.0, 0.5)
    assert (loop.epoch_loss, loop.epoch_steps, loop.window_steps, loop.window_loss) == (
        3.0,
        3,
        0,
        0.0,
    )
    meta = json.loads(json.dumps({"loop": loop.__dict__}))
    assert epochs.LoopState.from_meta(meta) == loop
    assert epochs.LoopState.from_meta({}) == epochs.LoopState()


def test_steps_per_call_default_depends_on_the_platform():
    c = config_lib.get_config()
    assert programs.steps_per_call(c, "cpu") == 1
    assert programs.steps_per_call(c, "gpu") == programs.steps_per_call(c, "tpu") == 100
    c.steps_per_call = 7
    assert programs.steps_per_call(c, "gpu") == 7


def _chunk_run(config, splits, k, n_steps):
    mesh = sharding.make_mesh()
    key = jax.random.key(0)
    state = steps.create_train_state(key, config, total_steps=100)
    chunk = programs.make_train_chunk(config, mesh, config.batch_size, key, k)
    images = sharding.put_replicated(splits["train"].images, mesh)
    labels = sharding.put_replicated(splits["train"].labels, mesh)
    perm = jnp.arange(len(splits["train"].labels))
    window = programs.new_window(mesh)
    step = 0
    while step < n_steps:
        n = min(k, n_steps - step)
        state, window = chunk(state, window, images, labels, perm, step, n)
        step += n
    return jax.device_get(state.params), jax.device_get(window)


@pytest.mark.parametrize("model", ["seed_cnn", "resnet_small"])
def test_k_steps_in_one_call_give_the_same_parameters_as_k_calls(tiny_idx, tiny_tfds, model):
    config = tiny_config(tiny_idx, tiny_tfds, model=model, augment_flip="true", batch_size=16)
    splits = data.load_splits(config)
    n = 12 if model == "seed_cnn" else 4
    single, w1 = _chunk_run(config, splits, 1, n)
    looped, wk = _chunk_run(
        config, splits, 5, n
    )  # Chunks of 5, 5, 2 (or 4): a partial last chunk too.
    if (
        model == "seed_cnn"
    ):  # Its custom-VJP convolutions compile to the same kernels in a loop body.
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b, strict=True), single, looped)
        np.testing.assert_array_equal(w1["loss"], wk["loss"])
    else:  # XLA:CPU lowers autodiff's convolutions differently inside a loop: same math, other
        # rounding, which batch norm amplifies. The difference is a small fraction of the update.
        init = jax.device_get(
            steps.create_train_state(jax.random.key(0), config, total_steps=100).params
        )
        norm = lambda t: float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(t))))
        update = norm(jax.tree.map(np.subtract, single, init))
        assert norm(jax.tree.map(np.subtract, single, looped)) < 0.02 * update
        np.testing.assert_allclose(w1["loss"], wk["loss"], rtol=1e-4)


def test_the_loop_flips_each_image_in_every_other_epoch_when_asked(monkeypatch):
    """`augment_flip_alternating`: the step's batch holds each example mirrored in one of any two
    consecutive epochs (epoch = step // steps per epoch), whatever its place in the permutation."""
    seen = {}

    def train_step(state, batch, rng, **options):  # Records the batch the loop hands over.
        seen[int(state.step)] = (np.asarray(batch["image"]), np.asarray(batch["label"]))
        return state.replace(step=state.step + 1), {"loss": 0.0, "accuracy": 0.0}

    monkeypatch.setattr(programs.steps, "train_step", train_step)
    n, batch = 12, 4  # 3 steps per epoch.
    images = np.random.default_rng(0).integers(0, 255, (n, 5, 5, 1)).astype(np.uint8)
    labels = np.arange(n)  # The label is the example's id.
    mesh = sharding.make_mesh()
    config = config_lib.get_config()
    config.augment_flip, config.augment_flip_alternating = True, True
    one = programs.make_one_step(config, batch, sharding.batch_sharded(mesh))
    state = _StepOnly(jnp.int32(0))  # All the step needs of a TrainState here.
    window = programs.new_window(mesh)
    rng = np.random.default_rng(1)
    for _ in range(3):  # Epochs, each in another order.
        perm = jnp.asarray(rng.permutation(n))
        for index in range(n // batch):
            state, window = one(index, state, window, images, labels, perm, jax.random.key(0))
    flipped = {}  # (epoch, id) -> mirrored?
    for step, (got, ids) in seen.items():
        for image, i in zip(got, ids):
            assert (image == images[i]).all() or (image == images[i][:, ::-1]).all()
            flipped[step // 3, int(i)] = bool((image != images[i]).any())
    assert all(flipped[0, i] != flipped[1, i] and flipped[0, i] == flipped[2, i] for i in range(n))
    assert 0 < sum(flipped[0, i] for i in range(n)) < n


@dataclasses.dataclass(frozen=True)
class _StepOnly:
    step: jax.Array

    def replace(self, **kwargs):
        return dataclasses.replace(self, **kwargs)


def _records(workdir):
    return [
        {k: v for k, v in r.items() if k not in ("images_per_second", "epoch_seconds")}
        for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    ]


def test_a_run_with_several_steps_per_call_writes_the_same_metrics_and_state(
    tmp_path, tiny_idx, tiny_tfds
):
    one = train.train_and_evaluate(tiny_config(tiny_idx, tiny_tfds), tmp_path / "k1")
    seven = train.train_and_evaluate(
        tiny_config(tiny_idx, tiny_tfds, steps_per_call=7), tmp_path / "k7"
    )
    assert _records(tmp_path / "k1") == _records(tmp_path / "k7")
    assert one["test_accuracy"] == seven["test_accuracy"] and one["steps"] == seven["steps"] == 40
    _, s1 = load_trained(tmp_path / "k1")
    _, s7 = load_trained(tmp_path / "k7")
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a, b, strict=True), s1.params, s7.params
    )
    steps_saved = sorted(
        int(p.name) for p in (tmp_path / "k7" / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert steps_saved[-1] == 40 and all(
        s % 10 == 0 for s in steps_saved
    )  # Exact checkpoint steps.


def test_nan_is_caught_inside_a_multi_step_call(tmp_path, tiny_idx, tiny_tfds):
    from fashion_jax.errors import NonFiniteLossError

    config = tiny_config(tiny_idx, tiny_tfds, steps_per_call=7, learning_rate=1e30)
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train.train_and_evaluate(config, tmp_path / "w")


def test_summary_describes_the_trained_state_and_fewer_epochs_than_trained_are_refused(
    tmp_path, tiny_idx, tiny_tfds
):
    w = tmp_path / "w"
    summary = train.train_and_evaluate(tiny_config(tiny_idx, tiny_tfds), w)
    assert summary["steps"] == 40 and summary["epochs"] == 2
    assert summary["params"] == 140_682 and summary["forward_flops_per_image"] > 5e6  # ~8.4 MFLOP.
    assert summary["train_flops_total"] == summary["train_flops_per_step"] * 40 > 0
    with pytest.raises(CheckpointError, match="trained for 40 steps"):
        train.train_and_evaluate(tiny_config(tiny_idx, tiny_tfds, num_epochs=1), w)
    more = train.train_and_evaluate(
        tiny_config(tiny_idx, tiny_tfds, num_epochs=3, log_every_steps=4), w
    )
    assert (
        more["steps"] == 60 and more["epochs"] == 3
    )  # More epochs (and another log interval) continue.
    with pytest.raises(CheckpointError, match="max_train_examples: 0 -> 320"):
        train.train_and_evaluate(
            tiny_config(tiny_idx, tiny_tfds, num_epochs=3, max_train_examples=320), w
        )


def test_runs_off_the_cpu_count_flops_on_the_cpu_backend_with_a_cpu_runs_figures(
    tiny_idx, tiny_tfds, monkeypatch, capsys
):
    # XLA's GPU cost analysis counts nothing for the convolutions cuDNN runs, so a run on an
    # accelerator counts on the host's CPU backend (programs.costs_on_cpu): the same figures as
    # the program a CPU run compiles.
    config = tiny_config(tiny_idx, tiny_tfds, model="convnet_s")
    splits, info = data.load_data(config)
    progs = programs.build(config, sharding.make_mesh(), splits, info, total_steps=40)
    assert progs.costs["forward_flops"] > 1e6 and progs.costs["train_step_flops"] > 1e8
    # From the state's shapes (the runner) or from a state on the devices (the accelerator kit).
    for state in (progs.abstract_state, progs.init()):
        counted = programs.costs_on_cpu(config, state, splits["train"])
        assert counted == pytest.approx(progs.costs, rel=1e-6)

    # Off the CPU, a run's costs are costs_on_cpu's (its own cost analysis is not asked).
    seen = []
    monkeypatch.setattr(programs, "costs_on_cpu", lambda *a: seen.append(a) or {"from": "cpu"})
    monkeypatch.setattr(programs, "model_costs", lambda *a: pytest.fail("the GPU's own count"))
    got = programs.run_costs("gpu", config, progs.abstract_state, None, splits["train"], 1)
    assert got == {"from": "cpu"} and seen[0][0] is config
    monkeypatch.undo()

    def no_cpu_backend(backend=None):
        raise RuntimeError(f"Unknown backend {backend}")  # What JAX_PLATFORMS=cuda gives.

    monkeypatch.setattr(programs.jax, "local_devices", no_cpu_backend)
    capsys.readouterr()
    unknown = programs.costs_on_cpu(config, progs.abstract_state, splits["train"])
    assert unknown == {**progs.costs, "forward_flops": None, "train_step_flops": None}
    assert "FLOPs not counted (this process has no CPU backend" in capsys.readouterr().out


def test_the_workdir_lock_refuses_a_second_trainer_and_dies_with_its_holder(tmp_path):
    with workdir_lib.Lock(tmp_path):
        with pytest.raises(UserError, match=r"in use by pid \d+"):
            with workdir_lib.Lock(tmp_path):
                pass
    with workdir_lib.Lock(tmp_path):  # Released on exit.
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from fashion_jax.workdir import Lock; "
            f"l = Lock({str(tmp_path)!r}).__enter__(); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        workdir_lib.Lock(tmp_path).__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with workdir_lib.Lock(tmp_path):  # A lock left by a killed process does not block.
        pass


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_state(tiny_idx, tiny_tfds):
    for model in ("seed_cnn", "convnet_s"):  # Without and with batch norm.
        config = tiny_config(tiny_idx, tiny_tfds, model=model, compute_dtype="bfloat16")
        state = steps.create_train_state(jax.random.key(0), config)
        for tree in (state.params, state.opt_state, state.batch_stats):
            assert {x.dtype for x in jax.tree.leaves(tree) if hasattr(x, "dtype")} <= {
                jnp.dtype("float32"),
                jnp.dtype("int32"),
            }
        x = jnp.zeros((4, 28, 28, 1), jnp.uint8)
        logits = jax.jit(steps.predict_logits)(state, x)
        assert logits.shape == (4, 10) and logits.dtype == jnp.float32
        jaxpr = str(jax.make_jaxpr(steps.predict_logits)(state, x))
        dots = [
            line
            for line in jaxpr.splitlines()
            if "conv_general_dilated" in line or "dot_general" in line
        ]
        assert dots and all("bf16" in line for line in dots), dots


def test_bfloat16_training_converges_on_a_short_run(tmp_path, tiny_idx, tiny_tfds):
    summary = train.train_and_evaluate(
        tiny_config(tiny_idx, tiny_tfds, compute_dtype="bfloat16"), tmp_path / "w"
    )
    assert summary["test_accuracy"] > 0.5  # Chance is 0.1; float32 reaches about the same.


def test_sweep_runs_each_seed_in_its_own_workdir_and_resumes(tmp_path, tiny_idx, tiny_tfds, capsys):
    from conftest import runner_args
    from fashion_jax import sweep

    w = tmp_path / "exp"
    args = ["--workdir", str(w), "--seeds", "0,1", *runner_args(tiny_idx, tiny_tfds, num_epochs=1)]
    assert sweep.main(args) == 0
    out = capsys.readouterr().out
    result = json.loads((w / "sweep.json").read_text())
    assert [r["seed"] for r in result["seeds"]] == [0, 1]
    accs = [r["test_accuracy"] for r in result["seeds"]]
    # Each seed trains its own network: the first logged train loss (before any learning has had
    # time to make runs alike) differs between the two seeds' workdirs.
    first_loss = [
        next(json.loads(line)["loss"] for line in (w / f"seed_{i}" / "metrics.jsonl").open())
        for i in (0, 1)
    ]
    assert first_loss[0] != first_loss[1], first_loss
    assert result["test_accuracy_mean"] == pytest.approx(sum(accs) / 2)
    assert json.loads((w / "seed_1" / "config.json").read_text())["seed"] == 1
    assert "test_accuracy:" in out and "± " in out
    mtime = (w / "seed_0" / "summary.json").stat().st_mtime
    assert sweep.main(args) == 0  # Finished seeds are not retrained.
    assert (w / "seed_0" / "summary.json").stat().st_mtime == mtime
    assert sweep.main(["--workdir", str(w), "--seeds", "1,1"]) == 2
