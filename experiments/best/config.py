"""The accuracy recipe: a 0.7M-parameter pre-activation ResNet with batch norm, augmentation
(random crop, flip, random erasing), label smoothing, AdamW on a one-cycle schedule, an EMA of the
weights, flip test-time augmentation, and 5,000 training images held out to pick the best checkpoint.

About 0.44 GFLOP per training image: an accelerator recipe (see README, Accuracy).
"""

from fashion_jax.config import get_config as defaults


def get_config():
    config = defaults()
    config.model = "resnet_small"
    config.num_epochs = 40
    config.batch_size = 128
    config.optimizer = "adamw"
    config.learning_rate = 3e-3
    config.weight_decay = 5e-2
    config.schedule = "onecycle"
    config.warmup_epochs = 4.0
    config.label_smoothing = 0.1
    config.augment_crop_padding = 2
    config.augment_flip = True
    config.augment_erasing = 0.5
    config.ema_decay = 0.999
    config.tta_flip = True
    config.validation_examples = 5000
    config.eval_batch_size = 1000
    config.checkpoint_every_steps = 2000
    return config
