"""convnet_5ep's Muon at batch 64: 0.934 in 5 epochs, at 8.3 TFLOP (over the 5-epoch row's 7.5).

`experiments/convnet_5ep` (Muon on the convolution kernels, Nesterov SGD on the rest) at batch 64
and peak rate 0.1, as Muon was first measured (benchmarks/NOTES.md, Round 16): validation 0.9368
over seeds 0-2 on 55,000/5,000; test 0.9338 ± 0.0008 (0.9347, 0.9333, 0.9334) by `python -m
fashion_jax.sweep --workdir W --config experiments/convnet_5ep_muon/config.py --seeds 0,1,2`, at
8.31 TFLOP of training (XLA cost analysis): the Newton-Schulz iterations cost 0.39 GFLOP per step
whatever the batch, 28% of a batch-64 step. At batch 128 (half the steps) and rate 0.2,
convnet_5ep reaches the same accuracy at 7.39 TFLOP (Round 17); this recipe is kept as the
recorded point it is.
"""

from pathlib import Path

from fashion_jax.config import load_experiment


def get_config():
    config = load_experiment(Path(__file__).resolve().parents[1] / "convnet_5ep" / "config.py")
    config.batch_size = 64
    config.learning_rate = 0.1
    return config
