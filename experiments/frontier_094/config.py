"""Toward 0.94 in the Keras tutorial's time: `convnet_s` (53k parameters, ~7 MFLOP per image), 10 epochs.

Three pooling conv-BN-ReLU blocks (24, 48, 96 channels; 28 -> 14 -> 7 -> 3 px), global max pool.
Nesterov SGD on a triangular schedule (linear up for two epochs, linear down to 0), weight decay
5e-4, label smoothing 0.1, random flips, flip test-time augmentation. Tuned on 55,000/5,000;
trains on all 60,000 images. See benchmarks/NOTES.md (Frontier) and README (Accuracy).
"""

from fashion_jax.config import get_config as defaults


def get_config():
    config = defaults()
    config.model = "convnet_s"
    config.num_epochs = 10
    config.batch_size = 64
    config.optimizer = "sgd"
    config.momentum = 0.9
    config.nesterov = True
    config.learning_rate = 0.1
    config.weight_decay = 5e-4
    config.schedule = "linear"
    config.warmup_epochs = 2.0
    config.label_smoothing = 0.1
    config.augment_flip = True
    config.tta_flip = True
    config.checkpoint_every_steps = 0  # Epoch ends only.
    return config
