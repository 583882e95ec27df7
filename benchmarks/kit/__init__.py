"""The parts of `benchmarks/accelerator.py`, one section per module.

device.py       the device, its versions and its peak (a table of known devices, a measured matmul)
overhead.py     host overhead per train step with a model whose compute is negligible (probe.py)
throughput.py   images/s, compile time, FLOPs and utilization of the runner's compiled chunk
time_to_acc.py  the real runner on each recipe until its target test accuracy
runner.py       one run of `train.train_and_evaluate` in a temporary workdir, with a time budget
results.py      the JSON line, rewritten after every row, and how a failure or SIGTERM is recorded
shared.py       the context every section gets, configs, device-resident synthetic data
"""
