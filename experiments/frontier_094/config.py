"""0.93 in half the Keras tutorial's time (toward 0.94 in its time): `frontier_093` for 10 epochs.

The same `convnet_s` recipe (see experiments/frontier_093/config.py), twice as long, with the
triangular schedule's warm-up kept at a fifth of the run. Trains on all 60,000 images.
See benchmarks/NOTES.md (Frontier) and README (Recipes and accuracy).
"""

from pathlib import Path

from fashion_jax.config import load_experiment


def get_config():
    config = load_experiment(Path(__file__).resolve().parents[1] / "frontier_093" / "config.py")
    config.num_epochs = 10
    config.warmup_epochs = 2.0
    return config
