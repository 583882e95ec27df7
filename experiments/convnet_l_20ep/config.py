"""The accuracy recipe within 0.33 PFLOP: `convnet_l` (~31 MFLOP per image), 20 epochs, ~0.12 PFLOP.

convnet_5ep's recipe (Nesterov SGD on the triangular schedule, weight decay 5e-4, label smoothing
0.1, flips, flip test-time augmentation) on a larger network for longer: three pooling
conv-BN-ReLU blocks (48, 96, 192 channels) and one more 192-channel block at 3x3, global max pool
(542,554 parameters), 20 epochs with a 4-epoch warm-up, random crops (zero padding 2); 5,000
training images held out to pick the best checkpoint, so it trains on 55,000. Measured on the test
split, seeds 0, 1, 2: 0.9402 ± 0.0004 (0.9406, 0.9400, 0.9399) at 111.6 TFLOP of training (XLA
cost analysis), by `python -m fashion_jax.sweep --workdir W --config
experiments/convnet_l_20ep/config.py --seeds 0,1,2`; short of 0.95, the target that
experiments/convnet_l_55ep now holds with the compute left (330 TFLOP allowed).
The earlier `resnet_small` recipe (0.97 PFLOP for 40 epochs, about 2.5 hours per seed here) is
three times over the compute limit. See docs/recipes-and-accuracy.md and benchmarks/NOTES.md.
"""

from pathlib import Path

from fashion_jax.config import load_experiment


def get_config():
    config = load_experiment(Path(__file__).resolve().parents[1] / "convnet_5ep" / "config.py")
    # convnet_5ep's SGD recipe, the one this was tuned on (convnet_5ep now trains with Muon).
    config.optimizer, config.batch_size, config.learning_rate = "sgd", 64, 0.1
    config.model = "convnet_l"
    config.model_kwargs = {}
    config.num_epochs = 20
    config.warmup_epochs = 4.0
    config.augment_crop_padding = 2
    config.validation_examples = 5000
    return config
