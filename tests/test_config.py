import pytest

from fashion_jax import config as config_lib
from fashion_jax.errors import ConfigError
from fashion_jax.run import parse_args, resolve_config


def resolve(*argv, workdir="/nonexistent-workdir"):
    args, overrides = parse_args(["--workdir", workdir, *argv])
    return resolve_config(args.workdir, args.config, overrides)


def test_defaults_are_the_tutorial_recipe():
    c = resolve()
    assert (c.model, c.num_epochs, c.batch_size, c.learning_rate, c.seed) == (
        "seed_cnn",
        10,
        64,
        1e-3,
        0,
    )
    assert c.max_train_examples == 0


def test_overrides_are_parsed_to_the_default_type():
    c = resolve(
        "--config.num_epochs=2",
        "--config.learning_rate=3e-4",
        "--config.download=false",
        "--config.data_dir",
        "/tmp/x",
    )
    assert (c.num_epochs, c.learning_rate, c.download, c.data_dir) == (2, 3e-4, False, "/tmp/x")
    assert isinstance(c.num_epochs, int) and isinstance(c.learning_rate, float)


def test_unknown_key_names_the_closest_known_key():
    with pytest.raises(
        ConfigError, match="Unknown config key 'num_epoch'.*Did you mean 'num_epochs'"
    ):
        resolve("--config.num_epoch=3")


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--config.batch_size=0", "batch_size = 0 is out of range"),
        ("--config.learning_rate=-0.1", "learning_rate = -0.1 is out of range"),
        ("--config.learning_rate=nan", "learning_rate = nan is out of range"),
        ("--config.num_epochs=0", "num_epochs = 0 is out of range"),
        ("--config.batch_size=abc", "expected int"),
        ("--config.batch_size=1.5", "expected int"),
        ("--config.download=maybe", "expected bool"),
        ("--config.model=resnet9000", "model 'resnet9000' is unknown"),
        ("--config.tta_shift=15", "tta_shift = 15 is out of range"),
        ("--config.tta_shift=-1", "tta_shift = -1 is out of range"),
    ],
)
def test_bad_values_are_refused(arg, message):
    with pytest.raises(ConfigError, match=message):
        resolve(arg)


def test_experiment_file_cannot_add_keys_or_change_types(tmp_path):
    bad = tmp_path / "config.py"
    bad.write_text(
        "from fashion_jax.config import get_config as d\n"
        "def get_config():\n    c = d()\n    c.lerning_rate = 0.1\n    return c\n"
    )
    with pytest.raises(ConfigError, match="Unknown config key 'lerning_rate'.*learning_rate"):
        resolve(workdir=str(tmp_path))
    bad.write_text(
        "from fashion_jax.config import get_config as d\n"
        "def get_config():\n    c = d()\n    c.batch_size = '64'\n    return c\n"
    )
    with pytest.raises(ConfigError, match="batch_size"):
        resolve(workdir=str(tmp_path))


def test_workdir_config_file_is_used_and_overridden(tmp_path):
    (tmp_path / "config.py").write_text(
        "from fashion_jax.config import get_config as d\n"
        "def get_config():\n    c = d()\n    c.num_epochs = 7\n    return c\n"
    )
    assert resolve(workdir=str(tmp_path)).num_epochs == 7
    assert resolve("--config.num_epochs=3", workdir=str(tmp_path)).num_epochs == 3


def test_committed_experiments_load_and_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "experiments"
    files = sorted(root.glob("*/config.py"))
    assert files, "no experiments found"
    for f in files:
        config_lib.validate(config_lib.load_experiment(f))
