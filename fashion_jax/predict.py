"""Classify images with a trained workdir's latest checkpoint.

  python -m fashion_jax.predict --workdir experiments/base --index 0        # test image 0 (IDX order)
  python -m fashion_jax.predict --workdir experiments/base shirt.jpg bag.png # your own images

For a test image it prints the predicted class, its probability and the true class, and saves a PNG
of the image titled with both (the tutorial's `plt.imshow`). Class names are the dataset's own
(WORKDIR/dataset.json). Your own images (PNG/JPEG, any size, colour or grey, light or dark
background, transparent or not) are converted to look like Fashion-MNIST for a one-channel
dataset: grey, light-on-dark, the object scaled to fit and centred; for a colour dataset they are
resized. A transparent image whose visible pixels are all one colour (a glyph drawn by its alpha
channel) is read as its alpha channel; any other is composited on the data's background colour
(dataset.json; Fashion-MNIST's is black). It prints the top-3 classes for each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

from fashion_jax import data, exits
from fashion_jax import workdir as workdir_lib
from fashion_jax.errors import DataError, UserError
from fashion_jax.trained import load_trained  # noqa: F401 (also importable from here)


def dataset_info(workdir, config) -> data.DatasetInfo:
    """The image shape and class names a workdir's run was trained with."""
    info = workdir_lib.read_dataset_info(workdir)
    return info if info is not None else data.describe(config)


def data_background(workdir) -> list[float] | None:
    """The background colour dataset.json records (1 or 3 channels in 0..255), or None (runs
    older than it: black is assumed)."""
    value = (workdir_lib.read_json(Path(workdir) / workdir_lib.DATASET_JSON) or {}).get(
        "background"
    )
    ok = isinstance(value, list) and len(value) in (1, 3)
    if not ok or not all(isinstance(v, (int, float)) and 0 <= v <= 255 for v in value):
        return None
    return [float(v) for v in value]


def probabilities(state, images: np.ndarray, config=None) -> np.ndarray:
    """images uint8[B, H, W, C] -> class probabilities float32[B, num_classes] (the runner's
    inference path)."""
    from fashion_jax import evaluate

    logits = evaluate.all_logits(state, images, config)
    return np.asarray(jax.nn.softmax(logits, axis=-1))


def load_image_file(
    path: str | Path, shape: tuple[int, int, int] = (28, 28, 1), background=None
) -> np.ndarray:
    """Any PNG/JPEG -> uint8[H, W, C] for a model trained on images of `shape`.

    Transparency first (`without_alpha`): the alpha channel when the colours carry nothing, else
    the colours composited on `background` (the data's, per channel in 0..255; default black,
    Fashion-MNIST's). One channel: made to look like Fashion-MNIST (light object on black):
    greyscale; inverted when the background (the border) is lighter than the middle; the
    object's bounding box scaled so its longer side fits, centred. Three channels: RGB, resized
    to (H, W).
    """
    from PIL import Image, UnidentifiedImageError

    height, width, channels = shape
    try:
        with Image.open(path) as im:
            im.load()
            im = without_alpha(im, background)
            if channels == 3:
                rgb = im.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
                return np.asarray(rgb, np.uint8)
            grey = _grey(im)
    except Image.DecompressionBombError as e:
        raise UserError(
            f"{path} is too large to open safely ({e}). Give a smaller image."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(
            f"{path} is not an image this tool can read ({type(e).__name__}); "
            "give a PNG or JPEG file."
        ) from None
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if border.mean() > 127:
        grey = 255.0 - grey
    background = np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]]))
    grey = np.clip(grey - background, 0, 255)
    if grey.max() > 0:
        grey *= 255.0 / grey.max()
    rows, cols = np.nonzero(grey > 25)
    if len(rows):
        grey = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = grey.shape
    scale = min(height / h, width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(
        Image.fromarray(grey.astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    )
    out = np.zeros((height, width), np.uint8)
    top, left = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out[..., None]


# Visible pixels (alpha at least half) whose channels all span at most this many levels carry no
# colour: the image is its alpha channel.
UNIFORM_LEVELS = 8


def without_alpha(im, background=None):
    """A PIL image with its transparency resolved (others are returned as they are).

    When the visible pixels (alpha >= 128, else > 0) are all one colour and the alpha channel is
    not, the shape is in the alpha channel alone (a white or black glyph on a transparent
    background): the alpha channel is the image, light on dark, like Fashion-MNIST. Otherwise
    the colours are composited on `background` (the data's background colour, per channel in
    0..255, as dataset.json records it; None: black, Fashion-MNIST's).
    """
    from PIL import Image

    if not (im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info):
        return im
    rgba = np.asarray(im.convert("RGBA"), np.float32)
    colour, alpha = rgba[..., :3], rgba[..., 3]
    visible = alpha >= 128 if (alpha >= 128).any() else alpha > 0
    uniform = not visible.any() or np.ptp(colour[visible], axis=0).max() <= UNIFORM_LEVELS
    if uniform and np.ptp(alpha) > 0:
        return Image.fromarray(alpha.astype(np.uint8), "L")
    under = np.broadcast_to(np.asarray(background if background else [0], np.float32), (3,))
    weight = alpha[..., None] / 255.0
    mixed = colour * weight + under * (1.0 - weight)
    return Image.fromarray(np.clip(np.round(mixed), 0, 255).astype(np.uint8), "RGB")


def _grey(im) -> np.ndarray:
    """float32[H, W] in 0..255 from a PIL image of any mode without transparency (see
    `without_alpha`): 16-bit grey is scaled (not clipped) to 8 bits."""
    if im.mode.startswith("I") or im.mode == "F":
        values = np.asarray(im, dtype=np.float64)
        # 16-bit PNGs open as "I;16" or "I"; "F" (float TIFF) is taken as 0..1 when it fits.
        top = 65535.0 if im.mode != "F" else 1.0
        top = max(top, float(values.max()))
        return np.clip(values * (255.0 / top), 0, 255).astype(np.float32)
    return np.asarray(im.convert("L"), dtype=np.float32)


def figure_paths(out_dir: Path, names: list[str]) -> list[Path]:
    """`out_dir/<name>.png` for each name; a name seen before gets `_2`, `_3`, ... so no figure is
    written over another (two inputs `a/shirt.png` and `b/shirt.png`)."""
    seen: dict[str, int] = {}
    paths = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        paths.append(out_dir / (f"{name}.png" if seen[name] == 1 else f"{name}_{seen[name]}.png"))
    return paths


def check_output(path: Path) -> None:
    """Raises UserError unless `path` is a .png file name in an existing folder."""
    if path.suffix.lower() != ".png":
        raise UserError(f"--output {path} must end in .png.")
    if not path.parent.is_dir():
        raise UserError(
            f"--output {path}: the folder {path.parent} does not exist. Create it first."
        )
    if path.is_dir():
        raise UserError(f"--output {path} is a folder; give a file name ending in .png.")


def save_figure(image: np.ndarray, title: str, path: Path) -> None:
    """Saves `image` uint8[H, W, C] (or float32 in [0, 1]) as a PNG titled `title`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.2, 3.6))
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.floating):
        image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def predict_test_images(
    config, state, indices: list[int], out_dir: Path, output: str | None, names=data.CLASS_NAMES
) -> None:
    """Prints and draws the prediction for each test image in `indices` (IDX order for
    Fashion-MNIST, tfds' order for other datasets), naming classes by `names`."""
    if config.get("dataset") == data.MEMORY:
        raise DataError(
            "this run was trained on in-memory arrays, so there is no test set to read back: "
            "classify image files instead (python -m fashion_jax.predict --workdir W FILE.png)."
        )
    test, _ = data.load_test(config)
    for i in indices:
        if not 0 <= i < len(test.labels):
            raise DataError(
                f"--index {i} is out of range: the test set has {len(test.labels)} "
                f"images, 0..{len(test.labels) - 1}."
            )
    paths = [Path(output)] if output else figure_paths(out_dir, [f"test_{i}" for i in indices])
    workdir_lib.check_kinds(paths)
    for i, p, path in zip(indices, probabilities(state, test.images[indices], config), paths):
        pred, true = int(p.argmax()), int(test.labels[i])
        out_dir.mkdir(exist_ok=True)
        title = f"predicted: {names[pred]} ({p[pred]:.1%})\ntrue: {names[true]}"
        save_figure(test.images[i], title, path)
        print(
            f"test image {i}: predicted {names[pred]} (p={p[pred]:.3f}), true {names[true]} -> {path}"
        )


def predict_files(
    config,
    state,
    files: list[str],
    out_dir: Path,
    info: data.DatasetInfo | None = None,
    output: str | None = None,
    background=None,
) -> None:
    """Prints the top 3 classes of each image file and draws it as the network sees it (into
    `output` when given, for a single file). `background`: the data's background colour, for
    transparent images (see `load_image_file`)."""
    info = info or data.DatasetInfo(data.IMAGE_SHAPE, data.NUM_CLASSES, data.CLASS_NAMES)
    images = np.stack([load_image_file(p, info.image_shape, background) for p in files])
    names = info.class_names
    paths = [Path(output)] if output else figure_paths(out_dir, [Path(f).stem for f in files])
    workdir_lib.check_kinds(paths)
    for file, image, p, path in zip(files, images, probabilities(state, images, config), paths):
        top = np.argsort(p)[::-1][:3]
        ranked = ", ".join(f"{names[k]} {p[k]:.3f}" for k in top)
        out_dir.mkdir(exist_ok=True)
        save_figure(image, f"{Path(file).name}\npredicted: {names[top[0]]} ({p[top[0]]:.1%})", path)
        print(f"{file}: {ranked} -> {path}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a user error)."""
    parser = argparse.ArgumentParser(
        prog="python -m fashion_jax.predict", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workdir", required=True)
    parser.add_argument(
        "--index",
        type=int,
        action="append",
        help="test image index, IDX order (0 is an Ankle boot); repeatable",
    )
    parser.add_argument(
        "--output", default=None, help="PNG path (default: WORKDIR/predictions/...)"
    )
    parser.add_argument("images", nargs="*", help="image files (PNG/JPEG) to classify")
    args = parser.parse_args(argv)
    if not args.index and not args.images:
        args.index = [0]

    def body() -> int:
        if args.output is not None:
            check_output(Path(args.output))
            figures = len(args.index or []) + len(args.images)
            if figures != 1:
                raise UserError(
                    f"--output names one figure, but this call draws {figures} (one per --index "
                    "and per image file). Drop --output (figures go to WORKDIR/predictions/), or "
                    "ask for one image."
                )
        config, state = load_trained(args.workdir)
        out_dir = workdir_lib.check_path(args.workdir) / workdir_lib.PREDICTIONS
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(
                f"{out_dir} is a file, but predictions are written into a folder there. "
                "Move it away, or pass --output FILE.PNG."
            )
        info = dataset_info(args.workdir, config)
        if args.index:
            predict_test_images(config, state, args.index, out_dir, args.output, info.class_names)
        if args.images:
            background = data_background(args.workdir)
            predict_files(config, state, args.images, out_dir, info, args.output, background)
        return 0

    return exits.guarded(
        body,
        f"python -m fashion_jax.predict {' '.join(argv or sys.argv[1:])}",
        {"workdir": args.workdir},
    )


if __name__ == "__main__":
    sys.exit(main())
