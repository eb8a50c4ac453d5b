"""Reading the WAV files :mod:`.audio` claimed: headers when the dataset opens, then each file decoded, mixed to
mono, resampled and cut into the model's windows feed by feed.

The standard library's ``wave`` reads PCM, soundfile (when installed) the rest; written here: the mixing, the
band-limited resampling (numpy's FFT), the windows and the inputs beside the audio.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxopt import DataError, InputSpec, UsageError, input_specs

from . import source as src
from .stream import Feed, StreamedDataset, batching, pick

DEFAULT_RATE = 16000
DEFAULT_WINDOW_SECONDS = 0.032
OPTIONS: dict[str, src.Parser] = {
    **src.SAMPLES,
    "rate": src.positive_int,
    "window": src.positive_int,
    "resample": src.choice("yes", "no"),
    "input": str,
    "context": int,
}


def _header(path: Path) -> tuple[int, int]:
    """(sample rate, frames) of a WAV file, read from its header only."""
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.getframerate(), wav.getnframes()
    except wave.Error as exc:
        soundfile = _soundfile()
        if soundfile is None:
            raise DataError(
                f"{path}: not a PCM WAV file ({exc}); convert it to 16-bit PCM or pip install soundfile"
            ) from None
        try:
            info = soundfile.info(str(path))
        except Exception as sf_exc:  # soundfile raises its own LibsndfileError
            raise DataError(f"{path}: not a readable WAV file ({sf_exc})") from None
        return int(info.samplerate), int(info.frames)
    except (EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable WAV file ({exc or 'truncated'})") from None


def _soundfile() -> Any:
    try:
        import soundfile
    except ImportError:
        return None
    return soundfile


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """The file as mono float32 in [-1, 1] and its sample rate."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except wave.Error:
        signal, rate = _soundfile().read(str(path), dtype="float32", always_2d=True)  # _header vetted it
        return signal.mean(axis=1), int(rate)
    except (EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable WAV file ({exc or 'truncated'})") from None
    if width == 1:
        values = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 3:
        triples = np.frombuffer(raw[: len(raw) // 3 * 3], np.uint8).reshape(-1, 3).astype(np.int32)
        values = ((triples[:, 0] | triples[:, 1] << 8 | triples[:, 2] << 16) << 8 >> 8).astype(np.float32) / 2**23
    elif width in (2, 4):
        values = np.frombuffer(raw, f"<i{width}").astype(np.float32) / 2 ** (8 * width - 1)
    else:
        raise DataError(f"{path}: {8 * width}-bit samples are not supported")
    values = values[: len(values) // channels * channels]
    return values.reshape(-1, channels).mean(axis=1), rate


def resampled_length(frames: int, rate: int, target: int) -> int:
    return frames if rate == target else round(frames * target / rate)


def resample(signal: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``signal`` at ``target`` Hz: its spectrum cut (or zero-extended) to the new Nyquist frequency."""
    if rate == target or not len(signal):
        return signal
    length = resampled_length(len(signal), rate, target)
    spectrum = np.fft.rfft(signal)
    bins = length // 2 + 1
    kept = np.zeros(bins, dtype=spectrum.dtype)
    kept[: min(bins, len(spectrum))] = spectrum[:bins]
    return (np.fft.irfft(kept, n=length) * (length / len(signal))).astype(np.float32)


def _audio_input(specs: list[InputSpec], chosen: str | None, source: str) -> InputSpec:
    if chosen is not None:
        named = [s for s in specs if s.name == chosen]
        if not named:
            raise UsageError(
                f"{source!r}: input={chosen}: the model has no such input (inputs: {', '.join(s.name for s in specs)})"
            )
        return named[0]
    candidates = [s for s in specs if s.dtype.kind == "f" and s.dims is not None and len(s.dims) in (1, 2)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        described = ", ".join(f"{s.name} {s.dtype} {s.shape_text}" for s in specs)
        raise DataError(f"{source}: no model input takes audio ([batch, samples] floats): {described}")
    raise UsageError(
        f"{source!r}: several inputs could take the audio ({', '.join(s.name for s in candidates)}): add input=NAME"
    )


def _is_rate(spec: InputSpec) -> bool:
    return spec.dtype.kind in "iu" and spec.dims in ((), (1,))


def _extra(spec: InputSpec, rows: int, rate: int) -> np.ndarray:
    """What an input beside the audio gets in every feed: the rate for an integer scalar, else zeros."""
    if _is_rate(spec):
        return np.full(spec.dims, rate, dtype=spec.dtype)
    return np.zeros(tuple(d if isinstance(d, int) else rows for d in spec.dims), dtype=spec.dtype)


def open_audio(
    path: Path, found: list[Path], source: str, raw: dict[str, str], model: ir.Model, options: dict[str, Any]
) -> StreamedDataset:
    """The WAV files ``found`` at ``path`` (:func:`.source.open_claimed`) in windows for the model, as ``raw`` asks."""
    values = src.parse(source, "WAV audio", raw, OPTIONS)
    specs = input_specs(model)
    audio = _audio_input(specs, values.get("input"), source)
    extras = [s for s in specs if s is not audio]
    unknown = [s.name for s in extras if s.dims is None]
    if unknown:
        raise DataError(
            f"{source}: the model input {unknown[0]!r} has an unknown shape; use a loader script to fill it"
        )
    rate = values.get("rate", DEFAULT_RATE)
    context = values.get("context", 0)
    if context < 0:
        raise UsageError(f"{source!r}: context={context} must not be negative")
    fixed = audio.dims[-1] if isinstance(audio.dims[-1], int) else None
    window = values.get("window", fixed - context if fixed else round(rate * DEFAULT_WINDOW_SECONDS))
    if fixed and window + context != fixed:
        raise UsageError(
            f"{source!r}: window={window} + context={context}, but the model input {audio.name!r} takes {fixed} samples"
        )
    headers = [_header(file) for file in found]
    if values.get("resample") == "no":
        for file, (file_rate, _) in zip(found, headers):
            if file_rate != rate:
                raise DataError(
                    f"{file}: {file_rate} Hz, the model runs at {rate} Hz (resample=no; drop it to resample)"
                )
    counts = [-(-resampled_length(frames, file_rate, rate) // window) for file_rate, frames in headers]
    owner = np.repeat(np.arange(len(found)), counts)  # window index -> file index
    chosen = pick(len(owner), values.get("samples"), options.get("seed", 0))
    if not len(chosen):
        raise DataError(f"{path}: the WAV files hold no samples")
    # a rank-2 input batches windows on axis 0, unless another input's open dims must equal the rows
    batch = audio.dims[0] if len(audio.dims) == 2 else 1
    if not isinstance(batch, int) and any(s.dims and not all(isinstance(d, int) for d in s.dims) for s in extras):
        batch = 1
    rows, usable = batching(batch, len(chosen), options, source)
    chosen = chosen[:usable]
    starts = np.concatenate([[0], np.cumsum(counts)])

    def windows() -> Iterator[np.ndarray]:
        for index in np.unique(owner[chosen]):
            wanted = chosen[owner[chosen] == index] - starts[index]
            signal, file_rate = read_wav(found[index])
            signal = resample(signal, file_rate, rate)
            padded = np.zeros(context + counts[index] * window, np.float32)
            padded[context : context + len(signal)] = signal[: counts[index] * window]
            yield from np.lib.stride_tricks.sliding_window_view(padded, context + window)[::window][wanted]

    def feeds() -> Iterator[Feed]:
        stream = windows()
        for start in range(0, usable, rows):
            pending = [next(stream) for _ in range(min(rows, usable - start))]
            signal = np.stack(pending) if len(audio.dims) == 2 else pending[0]
            yield {audio.name: signal.astype(audio.dtype), **{s.name: _extra(s, len(pending), rate) for s in extras}}

    resampled = sum(1 for file_rate, _ in headers if file_rate != rate)
    filled = ", ".join(f"{s.name}={rate}" if _is_rate(s) else f"{s.name}=zeros {s.shape_text}" for s in extras)
    description = (f"audio: {usable} windows of {window} samples" + (f" after {context} of context" if context else "")
                   + f" at {rate} Hz from {len(found)} file(s)"
                   + (f", {resampled} resampled" if resampled else "") + (f", {filled}" if filled else ""))  # fmt: skip
    return StreamedDataset(str(path), specs, feeds, num_feeds=-(-usable // rows), num_samples=usable,
                           batched={audio.name} if len(audio.dims) == 2 else set(),
                           description=description)  # fmt: skip
