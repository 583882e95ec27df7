"""A Linen model from this folder's net.py (`CNN`), with its own settings in model_kwargs.

python -m fashion_jax.run --workdir experiments/linen_cnn
"""

from fashion_jax.config import get_config as defaults


def get_config():
    config = defaults()
    config.model = "net:CNN"  # net.py beside this file.
    config.model_kwargs = {"width": 32, "dropout": 0.1}
    config.num_epochs = 2
    return config
