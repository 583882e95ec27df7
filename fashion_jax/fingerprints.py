"""What a run is made of, as records a rerun compares: the model's code, its parameter
structure and the data. Pure functions of a config, a pytree or arrays (nothing here writes).

- `code(config, search_dirs)`: the model's code. Your own `"module:Name"` file: the SHA-256 of
  that file and of the files in its folder that it imports (and those they import), by their
  names in that folder, so a moved experiment keeps its fingerprint; a built-in model (or any
  class of fashion_jax): fashion_jax's version; a class of an installed library: that library's
  name and version.
- `params(state)`: the model's parameter structure (`tree_shapes` of its params and batch-norm
  statistics, their count and a hash).
- `data(splits, info)`: per split, its images' and labels' dtype and shape and a SHA-256 of their
  bytes (about 0.1 s for Fashion-MNIST's 70,000 images); the class count and image shape; the
  data's background colour (what `predict` composites transparent images on).
- `*_differences(old, new)`: what differs between two records, as short phrases for the one
  line that refuses a rerun.

The workdir keeps the model's record in `model.json` and the data's in `dataset.json`
(`fashion_jax.workdir`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import inspect
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fashion_jax import models

PACKAGE = "fashion_jax"


# ----------------------------------------------------------------------------- the model's code


def version(distribution: str) -> str:
    """The installed version of `distribution`, or "unknown" (e.g. run from a source tree)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def code(config, search_dirs=()) -> dict[str, Any]:
    """The fingerprint of the code that `config.model` names (see the module docstring):

    {"kind": "files", "folder": its folder, "files": {name: sha256}} for your own file,
    {"kind": "package", "package": name, "version": v} for a built-in model or a library's class.
    search_dirs: as for `models.resolve` (after the config's `model_dir`). Raises ConfigError
    when the model cannot be resolved (a missing or broken file), as building it would.
    """
    if ":" not in config.model:
        return _package(PACKAGE)
    cls = models.resolve(config.model, (config.get("model_dir", ""), *search_dirs))
    target = getattr(cls, "func", cls)  # A functools.partial of a class.
    module_name = getattr(target, "__module__", "") or ""
    if module_name.split(".")[0] == PACKAGE:
        return _package(PACKAGE)
    try:
        source = inspect.getsourcefile(target)
    except TypeError:
        source = None
    if source is None:
        return {"kind": "module", "module": module_name}
    path = Path(source).resolve()
    if {"site-packages", "dist-packages"} & set(path.parts):
        top = module_name.split(".")[0]
        names = importlib.metadata.packages_distributions().get(top)
        if names:
            return _package(names[0])
    return {"kind": "files", "folder": str(path.parent), "files": _files(path)}


def _package(name: str) -> dict[str, Any]:
    return {"kind": "package", "package": name, "version": version(name)}


def _files(main: Path) -> dict[str, str]:
    """{name relative to main's folder: sha256} of `main` and of the files in its folder that it
    imports, and those they import (a package folder there: all its .py files)."""
    root = main.parent
    todo, seen = [main], set()
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        if path.suffix == ".py":
            todo.extend(_imported(path, root))
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(seen)
    }


def _imported(path: Path, root: Path) -> list[Path]:
    """The files in `root` that the Python file `path` imports by name (`import x`, `from x
    import y`, `from . import x`, `from .x import y`), at any depth of its code."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):
        return []  # Still hashed; the import itself reports the error.
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level <= 1:
            if node.module:
                names.append(node.module.split(".")[0])
            elif node.level == 1:
                names += [a.name for a in node.names]
    found = []
    for name in dict.fromkeys(names):
        if (root / f"{name}.py").is_file():
            found.append(root / f"{name}.py")
        elif (root / name / "__init__.py").is_file():
            found += sorted((root / name).rglob("*.py"))
    return found


def code_differences(old: dict, new: dict) -> list[str]:
    """What changed between two `code` fingerprints: ["net.py changed", "layers.py is new",
    "fashion_jax 0.1.0 -> 0.2.0", ...]; [] when they are the same code."""
    if old.get("kind") == new.get("kind") == "files":
        a, b = old.get("files", {}), new.get("files", {})
        folder = Path(new.get("folder", ""))
        return (
            [f"{folder / n} changed" for n in sorted(a) if n in b and a[n] != b[n]]
            + [f"{folder / n} is new" for n in sorted(b) if n not in a]
            + [f"{folder / n} is gone" for n in sorted(a) if n not in b]
        )
    if old == new:
        return []
    return [f"the model's code was {describe(old)}, now {describe(new)}"]


def describe(fingerprint: dict) -> str:
    """A code fingerprint in a few words."""
    if fingerprint.get("kind") == "package":
        return f"{fingerprint.get('package')} {fingerprint.get('version')}"
    if fingerprint.get("kind") == "files":
        return f"the files {', '.join(fingerprint.get('files', {}))} in {fingerprint.get('folder')}"
    return f"module {fingerprint.get('module')}"


# ----------------------------------------------------------------------------- parameter structure


def _key(entry) -> str:
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey / FlattenedIndexKey.
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def spec(x) -> str:
    """An array's (or shape struct's, or Orbax metadata's) dtype and shape: "float32[3, 3, 1, 64]"."""
    return f"{np.dtype(x.dtype).name if _is_numpy(x.dtype) else x.dtype}[{', '.join(map(str, x.shape))}]"


def _is_numpy(dtype) -> bool:
    try:
        np.dtype(dtype)
    except TypeError:
        return False
    return True


def tree_shapes(tree) -> dict[str, str]:
    """{"params/Conv_0/kernel": "float32[3, 3, 1, 64]", ...}: every array of a pytree by its path
    (dict keys, attribute names and sequence indices joined by "/")."""
    return {
        "/".join(_key(k) for k in path): spec(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if hasattr(leaf, "shape")
    }


def params(state) -> dict[str, Any]:
    """The parameter structure of a TrainState (or its shapes): {"count", "sha256", "shapes"}
    over its params and batch-norm statistics."""
    shapes = tree_shapes({"params": state.params, "batch_stats": state.batch_stats})
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(state.params))
    digest = hashlib.sha256(json.dumps(shapes, sort_keys=True).encode()).hexdigest()
    return {"count": count, "sha256": digest, "shapes": shapes}


def shape_differences(old: dict[str, str], new: dict[str, str], limit: int = 3) -> list[str]:
    """What differs between two `tree_shapes`, the first `limit` phrases and a count of the rest:
    ["params/Dense_0/kernel float32[96, 5] -> float32[96, 3]", "params/Dense_1/bias is new", ...]."""
    found = (
        [f"{p} {old[p]} -> {new[p]}" for p in sorted(old) if p in new and old[p] != new[p]]
        + [f"{p} is new" for p in sorted(new) if p not in old]
        + [f"{p} is gone" for p in sorted(old) if p not in new]
    )
    if len(found) > limit:
        found = [*found[:limit], f"{len(found) - limit} more"]
    return found


# ----------------------------------------------------------------------------- the data


def data(splits, info) -> dict[str, Any]:
    """What a run's data is, as dataset.json records it besides the class names: {"num_classes",
    "image_shape", "background" (`background`), "splits": {name: {"images": "uint8[N, H, W, C]",
    "labels": "int32[N]", "sha256": of both arrays' bytes}}}; `splits` as `data.load_data`
    returns them (after the hold-out)."""
    record = {}
    for name in sorted(splits):
        images, labels = (np.ascontiguousarray(a) for a in splits[name])
        h = hashlib.sha256()
        for a in (images, labels):
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a.reshape(-1)).cast("B"))
        record[name] = {"images": spec(images), "labels": spec(labels), "sha256": h.hexdigest()}
    return {
        "num_classes": int(info.num_classes),
        "image_shape": [int(n) for n in info.image_shape],
        "background": background(splits["train"].images),
        "splits": record,
    }


def data_differences(old: dict, new: dict) -> list[str]:
    """What differs between two `data` records (an older record may hold only the class count
    and image shape: nothing else is compared then)."""
    found = []
    if old.get("num_classes") not in (None, new["num_classes"]):
        found.append(f"classes {old['num_classes']} -> {new['num_classes']}")
    if old.get("image_shape") not in (None, new["image_shape"]):
        found.append(f"image shape {old['image_shape']} -> {new['image_shape']}")
    a, b = old.get("splits"), new["splits"]
    if not isinstance(a, dict):
        return found
    for name in sorted(set(a) | set(b)):
        was = a.get(name) if isinstance(a.get(name), dict) else {}
        now = b.get(name, {})
        if name not in b:
            found.append(f"no {name} split now")
        elif name not in a:
            found.append(f"a {name} split now")
        elif was.get("images") != now["images"] or was.get("labels") != now["labels"]:
            found.append(
                f"{name} images {was.get('images')} -> {now['images']}, labels "
                f"{was.get('labels')} -> {now['labels']}"
            )
        elif was.get("sha256") != now["sha256"]:
            found.append(
                f"the {name} split holds other values, sha256 {str(was.get('sha256'))[:12]} -> "
                f"{now['sha256'][:12]}"
            )
    return found


def background(images: np.ndarray, count: int = 1000) -> list[int]:
    """The data's background colour, per channel in 0..255: the median of the border pixels of
    the first `count` images (uint8, or float in [0, 1]). Fashion-MNIST's is [0]."""
    sample = np.asarray(images[:count])
    if not len(sample):
        return [0] * int(sample.shape[-1])
    border = np.concatenate(
        [sample[:, 0], sample[:, -1], sample[:, :, 0], sample[:, :, -1]], axis=1
    ).reshape(-1, sample.shape[-1])
    median = np.median(border, axis=0)
    if np.issubdtype(sample.dtype, np.floating):
        median = median * 255.0
    return [int(np.clip(round(float(v)), 0, 255)) for v in median]
