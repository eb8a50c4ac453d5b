"""Reading the image files :mod:`.images` claimed: the source's options, the pre-processing planned from them
and the model's image input, each file's header checked when the dataset opens, then images decoded feed by feed.

Pillow decodes and resizes; written here: the layout and preset defaults read off the model, letterboxing and
padding to a multiple, and the scale / mean / std arithmetic (numpy).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxopt import DataError, InputSpec, UsageError, input_specs

from . import source as src
from .stream import Feed, StreamedDataset, batching, fits, pick

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
PRESETS: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] = {  # scale, mean, std
    "imagenet": (1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "0-1": (1 / 255, (0.0,), (1.0,)),
    "-1-1": (1 / 255, (0.5,), (0.5,)),
    "0-255": (1.0, (0.0,), (1.0,)),
}
KEEP_MULTIPLE = 32


def _byte(text: str) -> int:
    if not text.isdigit() or int(text) > 255:
        raise ValueError("expected a pixel value 0..255")
    return int(text)


OPTIONS: dict[str, src.Parser] = {
    **src.SAMPLES,
    "preset": src.choice(*PRESETS),
    "size": src.size,
    "resize": src.choice("stretch", "letterbox", "keep"),
    "multiple": src.positive_int,
    "fill": _byte,
    "order": src.choice("rgb", "bgr"),
    "scale": src.number,
    "mean": src.numbers,
    "std": src.numbers,
    "layout": src.choice("nchw", "nhwc"),
}


@dataclass(frozen=True)
class Preprocess:
    """What turns one decoded image into one sample of the model's input."""

    layout: str
    channels: int
    size: tuple[int, int] | None  # (height, width); None: the image's own (resize=keep only)
    resize: str
    multiple: int
    fill: int
    order: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: np.dtype
    preset: str | None

    def describe(self) -> str:
        size = "" if self.size is None else "x".join(map(str, self.size))
        geometry = (
            f"{self.layout.upper()} {self.channels}ch "
            + {
                "stretch": f"{size} stretch",
                "letterbox": f"{size} letterbox fill {self.fill}",
                "keep": f"aspect kept{' within ' + size if size else ''}, padded to x{self.multiple} with {self.fill}",
            }[self.resize]
        )
        values = f"scale {_fraction(self.scale)}, mean {_list(self.mean)}, std {_list(self.std)}"
        preset = f" (preset {self.preset})" if self.preset else ""
        return f"{geometry}, {self.order.upper() if self.channels == 3 else 'gray'}, {values}{preset}"

    def __call__(self, image: Any) -> np.ndarray:  # a PIL image -> [C, H, W] or [H, W, C]
        image = _resized(image, self)
        array = np.asarray(image, dtype=np.float32)
        if array.ndim == 2:
            array = array[:, :, None]
        if self.order == "bgr":
            array = array[:, :, ::-1]
        array = (array * self.scale - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "nchw":
            array = array.transpose(2, 0, 1)
        return np.ascontiguousarray(array, dtype=self.dtype)


def _fraction(value: float) -> str:
    if 0 < value < 1 and abs(1 / value - round(1 / value)) < 1e-6:
        return f"1/{round(1 / value)}"
    return f"{value:g}"


def _list(values: tuple[float, ...]) -> str:
    return ":".join(f"{v:g}" for v in values)


def _resized(image: Any, prep: Preprocess) -> Any:
    from PIL import Image

    if prep.size is None:
        fitted = image
    elif prep.resize == "stretch":
        return image.resize((prep.size[1], prep.size[0]), Image.Resampling.BILINEAR)
    else:
        height, width = prep.size
        ratio = min(height / image.height, width / image.width)
        fitted = image.resize(
            (max(1, round(image.width * ratio)), max(1, round(image.height * ratio))), Image.Resampling.BILINEAR
        )
    if prep.resize == "letterbox":
        height, width = prep.size
        offset = ((width - fitted.width) // 2, (height - fitted.height) // 2)
    else:  # keep: pad right and bottom up to the multiple
        m = prep.multiple
        height, width = -(-fitted.height // m) * m, -(-fitted.width // m) * m
        offset = (0, 0)
    if (height, width) == (fitted.height, fitted.width):
        return fitted
    canvas = Image.new(fitted.mode, (width, height), (prep.fill,) * len(fitted.getbands()))
    canvas.paste(fitted, offset)
    return canvas


def _image_input(model: ir.Model, source: str) -> InputSpec:
    specs = input_specs(model)
    if len(specs) != 1 or specs[0].dims is None or len(specs[0].dims) != 4:
        described = ", ".join(f"{s.name} {s.shape_text}" for s in specs)
        raise DataError(f"{source}: an image folder feeds a model with one 4-D image input; this one takes {described} "
                        f"(use a loader script: --data loader.py:load_data)")  # fmt: skip
    return specs[0]


def _layout(dims: tuple, forced: str | None, name: str) -> str:
    """Where the channels are: the side holding 1 or 3 (NCHW first), else a small fixed dim, else ask."""
    if forced:
        return forced
    sides = (("nchw", dims[1]), ("nhwc", dims[3]))
    for layout, dim in sides:
        if dim in (1, 3):
            return layout
    for layout, dim in sides:
        if isinstance(dim, int) and dim <= 4:  # an odd channel count, refused by the caller
            return layout
    if isinstance(dims[1], int) == isinstance(dims[3], int):
        raise UsageError(
            f"input {name!r} {_text(dims)}: cannot tell where the channels are; add layout=nchw or layout=nhwc"
        )
    return "nhwc" if isinstance(dims[1], int) else "nchw"  # the fixed one is a spatial dim


def _text(dims: tuple) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "?" for d in dims) + "]"


def plan(source: str, values: dict[str, Any], spec: InputSpec, shapes: dict[str, tuple[int, ...]]) -> Preprocess:
    """The effective pre-processing: the user's options over the defaults the model's input implies."""
    dims = tuple(shapes.get(spec.name, spec.dims))
    if not fits(dims, spec.dims):
        raise UsageError(
            f"--shape {spec.name}={'x'.join(map(str, dims))} does not fit the model input {spec.shape_text}"
        )
    layout = _layout(dims, values.get("layout"), spec.name)
    channel, height, width = (dims[1], dims[2], dims[3]) if layout == "nchw" else (dims[3], dims[1], dims[2])
    channels = channel if isinstance(channel, int) else 3
    if channels not in (1, 3):
        raise DataError(
            f"input {spec.name!r} {_text(dims)} takes {channels} channels; images give 1 (grayscale) or 3 (RGB)"
        )
    resize = values.get("resize", "stretch")
    fixed = (height, width) if isinstance(height, int) and isinstance(width, int) else None
    size = values.get("size", fixed)
    if fixed and size != fixed:
        raise UsageError(
            f"{source!r}: size={size[0]}x{size[1]}, but the model input {spec.name!r} is fixed at {fixed[0]}x{fixed[1]}"
        )
    if size is None and resize != "keep":
        raise UsageError(f"{source!r}: the model input {spec.name!r} {_text(dims)} has no fixed height and width: "
                         f"add size=HxW, e.g. ?size=640x640")  # fmt: skip
    integer = spec.dtype.kind in "iu"
    preset = values.get("preset", "0-255" if integer else "0-1")
    scale, mean, std = PRESETS[preset]
    scale, mean, std = values.get("scale", scale), values.get("mean", mean), values.get("std", std)
    for key, given in (("mean", mean), ("std", std)):
        if len(given) not in (1, channels):
            raise UsageError(f"{source!r}: {key} has {len(given)} values; give 1 or {channels} (one per channel)")
    if any(s == 0 for s in std):
        raise UsageError(f"{source!r}: std must not be 0")
    if integer and (scale, mean, std) != PRESETS["0-255"]:
        raise UsageError(f"{source!r}: the model input {spec.name!r} is {spec.dtype}: raw pixels only (preset=0-255)")
    if spec.dtype.kind not in "iuf":
        raise DataError(f"input {spec.name!r} is {spec.dtype}, not an image tensor")
    multiple = values.get("multiple", KEEP_MULTIPLE if resize == "keep" else 1)
    if resize != "keep" and multiple != 1 and size is not None and (size[0] % multiple or size[1] % multiple):
        raise UsageError(f"{source!r}: size={size[0]}x{size[1]} is not a multiple of {multiple}")
    return Preprocess(layout, channels, size, resize, multiple, values.get("fill", 0), values.get("order", "rgb"),
                      scale, tuple(mean), tuple(std), spec.dtype,
                      preset if {"scale", "mean", "std"}.isdisjoint(values) else None)  # fmt: skip


def _opened(path: Path, channels: int) -> Any:
    """The image at ``path`` in mode L or RGB, header read only; a one-line DataError if it is no image for this
    model."""
    Image = src.require("PIL.Image", "pillow", "reading images")
    try:
        image = Image.open(path)
    except (OSError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    if channels == 1 and image.mode not in GRAY_MODES:
        image.close()
        raise DataError(
            f"{path}: a {image.mode} colour image, but the model takes 1 channel (convert the images to grayscale)"
        )
    return image


def _decoded(path: Path, prep: Preprocess) -> np.ndarray:
    with _opened(path, prep.channels) as image:
        try:
            converted = image.convert("L" if prep.channels == 1 else "RGB")
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt pixel data
            raise DataError(f"{path}: cannot decode the image ({exc})") from None
    return prep(converted)


def open_images(
    path: Path, found: list[Path], source: str, raw: dict[str, str], model: ir.Model, options: dict[str, Any]
) -> StreamedDataset:
    """The images ``found`` at ``path`` (:func:`.source.open_claimed`) as the model's input, fed as ``raw`` asks."""
    values = src.parse(source, "an image folder", raw, OPTIONS)
    spec = _image_input(model, source)
    prep = plan(source, values, spec, dict(options.get("shapes") or {}))
    chosen = [found[i] for i in pick(len(found), values.get("samples"), options.get("seed", 0))]
    for file in chosen:  # headers only: unreadable files and wrong channels fail before any work
        _opened(file, prep.channels).close()
    batch = spec.dims[0]
    one_by_one = prep.resize == "keep" and not isinstance(batch, int)  # each image its own size
    rows, usable = batching(1 if one_by_one else batch, len(chosen), options, source)
    chosen = chosen[:usable]

    def feeds() -> Iterator[Feed]:
        for start in range(0, len(chosen), rows):
            samples = [_decoded(file, prep) for file in chosen[start : start + rows]]
            if len({s.shape for s in samples}) > 1:
                raise DataError(
                    f"{source}: images {chosen[start].name}.. give different sizes in one batch; add size=HxW"
                )
            yield {spec.name: np.stack(samples)}

    picked = f"{len(chosen)} of {len(found)} files" if len(chosen) < len(found) else f"{len(chosen)} files"
    return StreamedDataset(str(path), [spec], feeds, num_feeds=-(-usable // rows), num_samples=len(chosen),
                           batched={spec.name}, description=f"images: {picked}, {prep.describe()}")  # fmt: skip
