"""Time to accuracy: the tutorial's SeedCNN, reaching 0.90 test accuracy in two epochs.

Batch 32 (on this CPU, as many images/s as batch 64 and twice the updates) with a one-cycle
learning-rate schedule peaking at 2e-3 after 0.4 epochs. See benchmarks/vs_keras.py.
"""

from fashion_jax.config import get_config as defaults


def get_config():
    config = defaults()
    config.model = "seed_cnn"
    config.num_epochs = 2
    config.batch_size = 32
    config.learning_rate = 2e-3
    config.schedule = "onecycle"
    config.warmup_epochs = 0.4
    config.checkpoint_every_steps = 0  # Epoch ends only.
    return config
