"""The accuracy recipe within 0.33 PFLOP: `convnet_l` (~35 MFLOP per image), 20 epochs, ~0.12 PFLOP.

Three pooling conv-BN-ReLU blocks (48, 96, 192 channels) and one more 192-channel block at 3x3,
global max pool. Nesterov SGD on a triangular schedule, weight decay 5e-4, label smoothing 0.1,
random crops (zero padding 2) and flips, flip test-time augmentation; 5,000 training images held
out to pick the best checkpoint. The earlier `resnet_small` recipe (0.97 PFLOP for 40 epochs, about
2.5 hours per seed here) is three times over the compute limit. See README (Recipes and accuracy).
"""

from fashion_jax.config import get_config as defaults


def get_config():
    config = defaults()
    config.model = "convnet_l"
    config.num_epochs = 20
    config.batch_size = 64
    config.optimizer = "sgd"
    config.momentum = 0.9
    config.nesterov = True
    config.learning_rate = 0.1
    config.weight_decay = 5e-4
    config.schedule = "linear"
    config.warmup_epochs = 4.0
    config.label_smoothing = 0.1
    config.augment_crop_padding = 2
    config.augment_flip = True
    config.tta_flip = True
    config.validation_examples = 5000
    config.checkpoint_every_steps = 0  # Epoch ends only.
    return config
