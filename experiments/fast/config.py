"""Time to accuracy: 0.90 test accuracy in two epochs, about 20 s of training on a 2-core CPU.

`fast_cnn` is SeedCNN at 0.3x its FLOPs (conv widths 32/32, a 128-wide ReLU hidden layer).
Batch 32 (on this CPU, as many images/s as batch 64 and twice the updates), a one-cycle
learning-rate schedule peaking at 3e-3 after 0.4 epochs, label smoothing 0.1.
See benchmarks/vs_keras.py and README (Speed).
"""

from fashion_jax.config import get_config as defaults


def get_config():
    config = defaults()
    config.model = "fast_cnn"
    config.num_epochs = 2
    config.batch_size = 32
    config.learning_rate = 3e-3
    config.schedule = "onecycle"
    config.warmup_epochs = 0.4
    config.label_smoothing = 0.1
    config.checkpoint_every_steps = 0  # Epoch ends only.
    return config
