"""The tutorial's recipe: SeedCNN, Adam 1e-3, batch 64, 10 epochs, all 60,000 training images."""

from fashion_jax.config import get_config as defaults


def get_config():
    config = defaults()
    config.model = "seed_cnn"
    config.num_epochs = 10
    config.batch_size = 64
    config.learning_rate = 1e-3
    return config
