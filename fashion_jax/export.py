"""Export a trained run to files that run without this library: ONNX, TF SavedModel, StableHLO.

  python -m fashion_jax.export --workdir experiments/base                      # all three formats
  python -m fashion_jax.export --workdir W --format onnx --output /tmp/model   # one format

Each exported model is the run's evaluation path, `steps.predict_logits` (the EMA weights and
batch-norm statistics where the run has them, eval mode, flip test-time augmentation when the
config uses it): uint8 images [N, H, W, C] (any N) in, float32 logits [N, classes] out. Each file is
checked as it is written: loaded back by its own runtime (onnxruntime, `tf.saved_model.load`,
`jax.export.deserialize`) and run on the whole test set, its logits within `TOLERANCE` of
predict's and the same class for every image (except where predict's top two logits are within
`TOLERANCE`); the command prints the test accuracy each format reaches. docs/export.md has the rest.

The functions are importable: `export_state(state, formats, output, images, labels, tta_flip=...)`
exports any TrainState whose `apply_fn` is the model, from research code.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fashion_jax import cpu_ops, exits, steps
from fashion_jax.errors import UserError
from fashion_jax.exporters import (  # noqa: F401 (check_available: also importable from here)
    EXPORTERS,
    PLATFORMS,
    check_available,
    missing_extra,
    quiet_loggers,
)

FORMATS = ("onnx", "saved_model", "stablehlo")
# What each format writes into the output folder.
FILES = {"onnx": "model.onnx", "saved_model": "saved_model", "stablehlo": "model.stablehlo"}
# The largest difference allowed between an exported model's logits and predict's, per logit.
# Measured: at most 1.5e-5 (float32 rounding in other op orders); a wrong export (a missing
# batch-norm statistic, the live weights instead of the EMA, no flip) is off by 1e-2 or more.
TOLERANCE = 1e-3
# Which formulation each format tries first. "trained" is the state's own `apply_fn` (for the
# built-in models: the fast CPU formulations of cpu_ops); "readable" the same parameters in
# standard ops (`readable_apply_fn`). The TFLite converter (the way on from a SavedModel) cannot
# take the fast formulation's strided slices with a dynamic batch, so SavedModel starts readable.
PREFERENCE = {
    "onnx": ("trained", "readable"),
    "saved_model": ("readable", "trained"),
    "stablehlo": ("trained", "readable"),
}


class ExportRefused(Exception):
    """An exporter could not convert a formulation, or its file did not reproduce predict."""


@dataclasses.dataclass
class Result:
    """One verified export: where, from which formulation, and how it compares to predict."""

    format: str
    path: Path
    formulation: str  # "trained" or "readable".
    max_abs_diff: float  # max |logits - predict's logits| over the test set.
    class_changes: int  # Images whose class differs from predict's (each a near tie).
    correct: int  # Test images classified right.
    count: int

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)


# --- The readable formulation -----------------------------------------------------------------


def readable_apply_fn(apply_fn: Callable) -> Callable | None:
    """The readable formulation of a model: an `apply` with the same parameters, or None.

    apply_fn: a TrainState's `apply_fn`, the bound `apply` of a Linen module. A module with a
    `formulation` field (`cpu_ops.FORMULATIONS`; the built-in networks) is cloned with
    `formulation="plain"` (standard ops, the same parameters) and its `apply` returned; None for
    any other model (it is then exported as trained). Callers check that the logits agree.
    """
    module = getattr(apply_fn, "__self__", None)
    if (
        isinstance(module, nn.Module)
        and getattr(module, "formulation", None) in cpu_ops.FORMULATIONS
    ):
        return module.clone(formulation="plain").apply
    return None


def formulations(state) -> dict[str, Any]:
    """{"trained": state, "readable": state with the readable apply_fn (if the model has one)}."""
    out = {"trained": state}
    readable = readable_apply_fn(state.apply_fn)
    if readable is not None:
        out["readable"] = state.replace(apply_fn=readable)
    return out


def inference_fn(state, tta: dict[str, Any]) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """images uint8[N, H, W, C] -> logits float32[N, classes]: predict's path with `state` fixed.
    tta: `predict_logits`' test-time augmentation options (`steps.eval_options`)."""
    return lambda images: steps.predict_logits(state, images, **tta)


# --- The exporters: each writes a file and returns a function that runs it with its runtime ----


def batched(fn: Callable, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """fn over `images` in batches of `batch_size` -> float32[N, K], concatenated in order."""
    out = [np.asarray(fn(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)


def reference_logits(state, images: np.ndarray, tta: dict[str, Any]) -> np.ndarray:
    """Predict's logits float32[N, K] for uint8 `images` [N, H, W, C], in float32 matmul precision."""
    fn = jax.jit(inference_fn(state, tta))
    with jax.default_matmul_precision("float32"):
        return batched(fn, images)


def compare(
    logits: np.ndarray, reference: np.ndarray, tolerance: float = TOLERANCE
) -> tuple[float, int]:
    """(max |logits - reference|, images whose class differs); raises ExportRefused beyond tolerance.

    logits, reference: float32[N, K]. A class may differ only where the reference's top logit
    is within `tolerance` of the logit of the class chosen instead.
    """
    if logits.shape != reference.shape:
        raise ExportRefused(f"logits of shape {logits.shape}, expected {reference.shape}")
    diff = float(np.abs(logits - reference).max()) if logits.size else 0.0
    if not diff <= tolerance:  # Also catches NaN.
        raise ExportRefused(f"logits differ from predict's by {diff:.3g} > {tolerance:g}")
    chosen, best = logits.argmax(-1), reference.argmax(-1)
    changed = np.nonzero(chosen != best)[0]
    rows = np.arange(len(reference))
    gaps = reference[rows, best] - reference[rows, chosen]
    if (gaps[changed] > tolerance).any():
        i = int(changed[np.argmax(gaps[changed])])
        raise ExportRefused(f"image {i} changes class with a margin of {gaps[i]:.3g}")
    return diff, len(changed)


def export_format(
    fmt: str,
    candidates: dict[str, Any],
    tta: dict[str, Any],
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray | None,
    reference: np.ndarray,
    tolerance: float = TOLERANCE,
) -> Result:
    """Exports `fmt` into `folder` from the first formulation in PREFERENCE that verifies.

    candidates: {"trained": state, "readable": state} as from `formulations`. Raises
    ExportRefused with every formulation's reason when none does.
    """
    path = folder / FILES[fmt]
    reasons = []
    for name in PREFERENCE[fmt]:
        if name not in candidates:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        try:
            run = EXPORTERS[fmt](inference_fn(candidates[name], tta), images.shape[1:], path)
            logits = batched(run, images)
            diff, changed = compare(logits, reference, tolerance)
        except Exception as e:  # Any failure of one formulation: try the next.
            reasons.append(f"{name} formulation: {type(e).__name__}: {first_line(e)}")
            continue
        correct = int((logits.argmax(-1) == labels).sum()) if labels is not None else 0
        return Result(fmt, path, name, diff, changed, correct, len(images))
    raise ExportRefused("; ".join(reasons))


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


def export_state(
    state,
    formats: Sequence[str],
    output: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    tta_flip: bool = False,
    tta_shift: int = 0,
    tolerance: float = TOLERANCE,
    log: Callable[[str], None] = lambda line: None,
) -> list[Result]:
    """Exports `state`'s evaluation path in each of `formats` into the folder `output`, verified.

    state: a TrainState (`apply_fn`, params, batch_stats, ema). images: uint8[N, H, W, C], the
    set to verify on (the test set); labels: int[N] for the accuracy, or None. Every format is
    written to a scratch folder first and verified there; only when all are, they move into
    `output` (replacing earlier exports of the same formats), so a refusal changes nothing.
    Raises UserError when an exporter refuses the model or `output` cannot be written.
    """
    output = Path(output)
    check_output(output)
    check_available(formats)
    tta = {"tta_flip": tta_flip, "tta_shift": tta_shift}
    reference = reference_logits(state, images, tta)
    if labels is not None:
        correct = int((reference.argmax(-1) == labels).sum())
        log(f"predict: test accuracy {correct / len(images):.4f} ({correct}/{len(images)})")
    candidates = formulations(state)
    results = []
    with tempfile.TemporaryDirectory(prefix="fashion_jax-export-") as scratch:
        for fmt in formats:
            try:
                result = export_format(
                    fmt, candidates, tta, Path(scratch), images, labels, reference, tolerance
                )
            except ExportRefused as e:
                raise UserError(
                    f"the {fmt} exporter refuses this model ({e}). Export other formats with "
                    f"--format {','.join(f for f in FORMATS if f != fmt)}."
                ) from None
            results.append(result)
            log(describe(result))
        try:
            output.mkdir(parents=True, exist_ok=True)
            for result in results:
                target = output / FILES[result.format]
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                shutil.move(str(result.path), str(target))
                result.path = target
        except OSError as e:
            raise UserError(
                f"cannot write to --output {output} ({e.strerror or e}). Choose another folder."
            ) from None
    return results


def describe(r: Result) -> str:
    return (
        f"{r.format}: test accuracy {r.accuracy:.4f} ({r.correct}/{r.count}); "
        f"max |logit - predict| {r.max_abs_diff:.2g} (tolerance {TOLERANCE:g}), "
        f"{r.class_changes} class changes; {r.formulation} formulation"
    )


# --- The command line ------------------------------------------------------------------------


def parse_formats(text: str) -> list[str]:
    """ "onnx,stablehlo" -> ["onnx", "stablehlo"]; raises UserError for an unknown or empty list."""
    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(
            f"--format {text!r}: unknown format {', '.join(map(repr, unknown)) or '(none)'}. "
            f"Choose from {','.join(FORMATS)}."
        )
    return list(dict.fromkeys(formats))


def check_output(output: Path) -> None:
    """Raises UserError if `output` is a file or cannot be created and written; writes nothing."""
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a folder. Choose a folder path.")
    existing = output
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--output {output}: {existing} is a file, not a folder.")
    try:  # The operating system's answer (os.access is always yes for root).
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".export-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(
            f"cannot write to --output {output} ({e.strerror or e}). Choose a folder you can "
            "write to."
        ) from None


def load_test_split(config) -> tuple[np.ndarray, np.ndarray]:
    """The run's test set: images uint8[N, H, W, C], labels int32[N] (IDX order)."""
    from fashion_jax import data

    test = data.load(config.data_dir or None, config.idx_dir or None, config.download)["test"]
    return np.asarray(test.images), np.asarray(test.labels)


def load_trained(workdir):
    """(config, state) of a trained workdir: `fashion_jax.load_trained`."""
    import fashion_jax

    return fashion_jax.load_trained(workdir)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a user error)."""
    parser = argparse.ArgumentParser(
        prog="python -m fashion_jax.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workdir", required=True, help="a trained run's folder")
    parser.add_argument(
        "--format", default=",".join(FORMATS), help=f"comma-separated, of {','.join(FORMATS)}"
    )
    parser.add_argument(
        "--output", default=None, help="folder to write into (default: WORKDIR/export)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    def body() -> int:
        formats = parse_formats(args.format)
        config, state = load_trained(args.workdir)
        output = Path(args.output) if args.output else Path(args.workdir) / "export"
        check_output(output)
        check_available(formats)
        images, labels = load_test_split(config)
        results = export_state(
            state,
            formats,
            output,
            images,
            labels,
            **steps.eval_options(config),
            log=lambda line: print(line, flush=True),
        )
        for r in results:
            print(f"wrote {r.path}")
        return 0

    command = f"python -m fashion_jax.export {' '.join(sys.argv[1:] if argv is None else argv)}"
    return exits.guarded(body, command, {"workdir": args.workdir})


if __name__ == "__main__":
    sys.exit(main())
