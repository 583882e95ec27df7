"""Toward 0.94 at the Keras tutorial's compute (<= 15.1 TFLOP of training): `frontier_093`, 10 epochs.

The same recipe (see experiments/frontier_093/config.py), twice as long, with the triangular
schedule's warm-up kept at a fifth of the run. Trains on all 60,000 images.

Measured (test split, seeds 0,1,2) with the network `ConvNet(widths=(16, 40, 112), extra=((2, 112),))`
(161k parameters): 0.9348 ± 0.0016 (0.9367, 0.9341, 0.9337) at 12.98 TFLOP of training (XLA cost
analysis), by `fashion_jax.sweep.main(["--workdir", W, "--config",
"experiments/frontier_094/config.py", "--seeds", "0,1,2", "--config.model=NAME"])` with that
network registered as NAME in `fashion_jax.models.MODELS` (selecting it here needs a
`model_kwargs` key, not in this schema yet). As committed it trains `convnet_s`: 0.9305-0.9314 on
test (seeds 0, 1). See benchmarks/NOTES.md (Frontier) and README (Recipes and accuracy).
"""

from pathlib import Path

from fashion_jax.config import load_experiment


def get_config():
    config = load_experiment(Path(__file__).resolve().parents[1] / "frontier_093" / "config.py")
    config.num_epochs = 10
    config.warmup_epochs = 2.0
    return config
