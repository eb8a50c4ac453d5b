"""WAV files as data: ``--data 'clips/?rate=16000,window=512'``.

Claims a ``.wav`` file or a folder holding them (recursively). The standard library's ``wave`` reads PCM
(8/16/24/32-bit); other encodings (float, compressed) go through soundfile when it is installed, else are a
one-line error. Written here: channels are mixed to mono, a file at another rate is resampled (band-limited,
through numpy's FFT) or, with ``resample=no``, rejected, and the signal is cut into windows of the model's
length (its fixed last dim, ``window=N``, or 32 ms: 512 samples at 16 kHz), the last one zero-padded;
``context=N`` puts the N samples before each window in front of it (silero-vad's own wrapper feeds 64).

The audio input is the model's one float input of rank 1 or 2 (``input=NAME`` picks among several). Every
other input is filled as the model declares it: an integer scalar (or [1]) is the sample rate, anything else
is zeros of its declared shape with open dims set to the feed's rows (a recurrent state starts from zero in
every feed). Files are read feed by feed; ``samples=N`` keeps a seeded choice of N windows.

This module only claims the files; :mod:`.audio_reader` parses the options and reads, imported when WAV files are
claimed (numpy loads then, not when the CLI loads the plugins on every command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from onnxopt import hookimpl

from . import source as src

if TYPE_CHECKING:
    import onnx_ir as ir

    from .stream import StreamedDataset

SUFFIXES = (".wav",)


def _open(*args: Any) -> StreamedDataset:
    from .audio_reader import open_audio  # numpy loads when audio is read, not at start-up

    return open_audio(*args)


@hookimpl
def onnxopt_open_dataset(source: str, model: ir.Model, options: dict[str, Any]) -> StreamedDataset | None:
    return src.open_claimed(source, SUFFIXES, _open, model, options)
