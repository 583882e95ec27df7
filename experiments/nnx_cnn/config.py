"""An NNX model from this folder's net.py (`CNN`), with its own settings in model_kwargs.

python -m fashion_jax.run --workdir experiments/nnx_cnn
"""

from fashion_jax.config import get_config as defaults


def get_config():
    config = defaults()
    config.model = "net:CNN"  # net.py beside this file.
    config.model_kwargs = {"in_channels": 1, "widths": (32, 64), "dropout": 0.2}
    config.num_epochs = 2
    config.ema_decay = 0.99
    return config
