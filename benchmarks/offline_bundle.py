"""Prepares a bundle for measuring an offline GPU (or TPU) machine with the accelerator kit.

  python benchmarks/offline_bundle.py OUT          # here, with network (pip) and the dataset
  bash OUT/run.sh RESULTS_DIR [kit args]           # there: no network, a preinstalled JAX

OUT holds (about 31 MB; with the repository it fits a 64 MiB transfer):

  wheels/   pure-Python wheels of what fashion_jax needs beyond a machine's usual JAX stack
            (CARRIED: ml_collections, and absl-py in case), fetched with
            `pip download --only-binary=:all: --python-version 3.12 --no-deps`
  data/     the decoded dataset: `fashion_mnist/3.0.1/` with `dataset_info.json` and
            `fashion_jax_arrays.npz` (compressed), which fashion_jax reads without TensorFlow
  run.sh    installs the wheels that are missing there (`pip install --no-index --no-deps
            --target OUT/site`), runs `benchmarks/accelerator.py` (its results line goes to
            RESULTS_DIR/accelerator.jsonl, rewritten as rows complete; the log to
            RESULTS_DIR/kit.log), then one short training (RESULTS_DIR/train_check/)

Expected there (as on the H200 machine this was written for): Python 3.12 with jax, jaxlib and
its plugin, flax, optax, orbax-checkpoint, tensorstore, numpy, matplotlib, pillow and tqdm
installed; TensorFlow, tensorflow-datasets, ml_collections and tensorboardX need not be. The
repository travels beside OUT (or set FASHION_JAX_REPO there). See docs/offline-gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What fashion_jax imports that a machine with a preinstalled JAX stack may lack: pure-Python
# packages only (pinned by constraints.txt). run.sh installs each only if it is missing there.
CARRIED = ("ml_collections", "absl-py")
PYTHON_VERSION = "3.12"
LIMIT_MB = 64


def pins() -> dict[str, str]:
    """{normalized name: version} from constraints.txt."""
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            out[name.lower().replace("_", "-")] = version
    return out


def download_wheels(folder: Path, packages, python_version: str, find_links: str | None) -> None:
    """Fetches the pinned pure wheels of `packages` into `folder` with pip (no dependencies)."""
    versions = pins()
    specs = [f"{p}=={versions[p.lower().replace('_', '-')]}" for p in packages]
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps"]
    cmd += ["--python-version", python_version, "--dest", str(folder), "--quiet", *specs]
    if find_links:
        cmd += ["--no-index", "--find-links", find_links]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: pip download failed:\n{proc.stderr.strip()}")
    for wheel in folder.glob("*.whl"):
        if not wheel.name.endswith("-none-any.whl"):
            raise SystemExit(f"error: {wheel.name} is not a pure-Python wheel")


def export_data(folder: Path, data_dir: str | None, idx_dir: str | None) -> Path:
    """Writes `fashion_mnist/3.0.1/{dataset_info.json, fashion_jax_arrays.npz}` under `folder`
    from the local prepared dataset (prepared first from the IDX files if needed)."""
    import numpy as np

    from fashion_jax import data

    splits = data.load(data_dir, idx_dir, download=False)
    source = data._builder_dir(data_dir)
    target = folder / source.relative_to(source.parents[1])
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "dataset_info.json", target / "dataset_info.json")
    arrays = {f"{s}_{k}": getattr(sp, k) for s, sp in splits.items() for k in ("images", "labels")}
    np.savez_compressed(target / data.CACHE_NAME, fingerprint=data._fingerprint(target), **arrays)
    return target


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def repo_mb() -> float:
    """Size of the repository's tracked files (0 outside a git checkout)."""
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    files = [ROOT / f for f in proc.stdout.split("\0") if f] if proc.returncode == 0 else []
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("out", help="folder to write (created; must be empty if it exists)")
    p.add_argument("--data-dir", default=None, help="tfds data dir holding the prepared dataset")
    p.add_argument("--idx-dir", default=None, help="IDX folder to prepare it from if needed")
    p.add_argument("--python-version", default=PYTHON_VERSION, help="the target's Python")
    p.add_argument("--find-links", default=None, help="take wheels from this folder, not PyPI")
    args = p.parse_args(argv)
    out = Path(args.out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        p.error(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    try:
        download_wheels(out / "wheels", CARRIED, args.python_version, args.find_links)
        target = export_data(out / "data", args.data_dir, args.idx_dir)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    repo = os.path.relpath(ROOT, out)
    script = (Path(__file__).parent / "offline_run.sh").read_text()
    (out / "run.sh").write_text(script.replace("@REPO_FROM_BUNDLE@", repo))
    (out / "run.sh").chmod(0o755)
    manifest = {
        "wheels": sorted(w.name for w in (out / "wheels").glob("*.whl")),
        "data": str(target.relative_to(out)),
        "python_version": args.python_version,
        "repo_from_bundle": repo,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = size_mb(out) + repo_mb()
    print(f"bundle: {out} ({size_mb(out):.1f} MB; with the repository's files {total:.1f} MB)")
    for wheel in manifest["wheels"]:
        print(f"  wheels/{wheel}")
    print(f"  {manifest['data']}/  run.sh  manifest.json")
    if total > LIMIT_MB:
        print(f"warning: more than {LIMIT_MB} MiB in all", file=sys.stderr)
    print(f"there: bash {out.name}/run.sh RESULTS_DIR            (then --plan full)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
