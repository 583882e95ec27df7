"""docs/your-model.md runs as written: its model files build through the config, its in-memory
data example trains, and its NNX research loop learns Fashion-MNIST."""

import re

import jax
import pytest

from conftest import ROOT, requires_real_data
from fashion_jax import config as config_lib
from fashion_jax import steps

PAGE = ROOT / "docs" / "your-model.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def files() -> dict[str, str]:
    """The blocks that are files: their first line is `# path`."""
    out = {}
    for block in blocks():
        first = block.splitlines()[0]
        if first.startswith("# experiments/"):
            out[first[2:]] = block
    return out


def test_the_page_has_the_examples_it_promises():
    assert set(files()) == {
        "experiments/mine/net.py",
        "experiments/mine/config.py",
        "experiments/mine_nnx/net.py",
        "experiments/mine_nnx/config.py",
    }
    assert len(blocks()) == 6
    readme = (ROOT / "README.md").read_text()
    assert "docs/your-model.md" in readme


@pytest.mark.parametrize("name, kind", [("mine", "linen"), ("mine_nnx", "nnx")])
def test_the_example_experiments_build_and_take_a_step(tmp_path, name, kind):
    for path, text in files().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    config = config_lib.validate(
        config_lib.load_experiment(tmp_path / "experiments" / name / "config.py")
    )
    assert config.model_dir == str(tmp_path / "experiments" / name)
    state = steps.create_train_state(
        jax.random.key(0), config, image_shape=(28, 28, 1), num_classes=10
    )
    assert (kind == "nnx") == (type(state.apply_fn).__name__ == "NNXApply")
    batch = {
        "image": jax.numpy.zeros((4, 28, 28, 1), jax.numpy.uint8),
        "label": jax.numpy.arange(4),
    }
    new, metrics = jax.jit(steps.train_step)(state, batch, jax.random.key(1))
    assert int(new.step) == 1 and float(metrics["loss"]) > 0


def test_the_in_memory_data_example_trains(tmp_path, monkeypatch):
    code = next(b for b in blocks() if "data=data" in b)
    code = code.replace('"/tmp/fashion_jax_arrays"', repr(str(tmp_path / "w")))
    namespace = {}
    exec(compile(code, str(PAGE), "exec"), namespace)
    assert namespace["summary"]["test_accuracy"] >= 0.5  # 5 classes: chance is 0.2.


@requires_real_data
def test_the_nnx_research_loop_learns_fashion_mnist():
    code = next(b for b in blocks() if "split_nnx(" in b)
    namespace = {}
    exec(compile(code, str(PAGE), "exec"), namespace)
    assert namespace["test_accuracy"] >= 0.7, namespace["test_accuracy"]  # 300 steps of an MLP.
