"""Image folders as data: ``--data 'pages/?preset=imagenet,size=640x640,samples=64'``.

Claims a folder holding .jpg / .jpeg / .png / .bmp / .webp files (searched recursively; a folder with .npy /
.npz files at its top is the host's), or one such file. Pillow decodes (``pip install 'onnxopt[data]'``);
written here is the pre-processing, with every default read off the model's one image input:

- layout NCHW or NHWC (from where the 1 or 3 channels sit, or ``layout=``), channels (1: grayscale,
  3: RGB), height and width (a fixed size, ``--shape``, or ``size=HxW`` when the model leaves them open);
- ``resize=stretch`` (default: exactly HxW), ``letterbox`` (keep the aspect, pad to HxW, centred, with
  ``fill``) or ``keep`` (keep the aspect, fit in HxW, pad right / bottom to a ``multiple``, 32 by default;
  each image is then its own feed, sizes differ);
- ``order=rgb|bgr``, then ``value * scale``, minus ``mean``, over ``std`` (per channel in the order fed, so
  ``preset=imagenet,order=bgr`` is PaddleOCR's convention); presets ``imagenet``, ``0-1`` (the default for a
  float input), ``-1-1`` and ``0-255`` (the only one for an integer input).

Images are decoded feed by feed; ``samples=N`` keeps a seeded choice of N files. Every chosen file's header is
read when the dataset opens, so an unreadable file or a colour image for a one-channel model is a one-line
error before any work.

This module only claims the files; :mod:`.image_reader` parses the options and reads, imported when images are
claimed (numpy and Pillow load then, not when the CLI loads the plugins on every command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from onnxopt import hookimpl

from . import source as src

if TYPE_CHECKING:
    import onnx_ir as ir

    from .stream import StreamedDataset

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _open(*args: Any) -> StreamedDataset:
    from .image_reader import open_images  # numpy and Pillow load when images are read, not at start-up

    return open_images(*args)


@hookimpl
def onnxopt_open_dataset(source: str, model: ir.Model, options: dict[str, Any]) -> StreamedDataset | None:
    return src.open_claimed(source, SUFFIXES, _open, model, options)
