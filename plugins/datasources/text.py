"""Text as data: ``--data 'corpus.txt?tokenizer=tokenizer.json,max_length=64'``.

Claims a ``.txt`` file (one example a line, blank lines skipped) or a ``.jsonl`` file (one JSON string, or an
object whose ``field``, ``text`` by default, holds a string or a pair of strings). The ``tokenizers`` package
(``pip install 'onnxopt[data]'``) tokenizes with the model's own tokenizer.json, truncating to ``max_length``;
written here is the glue: the ids, attention mask and token type ids go to the model inputs named for them
(``input_ids`` / ``*ids``, ``attention_mask`` / ``*mask``, ``token_type_ids`` / ``*type*`` / ``*segment*``),
padded to ``max_length`` (``padding=max``, the default: every feed has the same shape), per batch to its
longest example (``longest``), or per batch after sorting by length so a batch holds similar lengths
(``bucket``).

A tokenizer whose vocabulary overruns the model's embedding table (the Gather the ids feed, read off the
graph when it can be found) is a one-line error, not an out-of-range index inside onnxruntime.

This module only claims the file; :mod:`.text_reader` parses the options and reads, imported when a text file is
claimed (numpy, onnx_ir and tokenizers load then, not when the CLI loads the plugins on every command).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxopt import hookimpl

from . import source as src

if TYPE_CHECKING:
    import onnx_ir as ir

    from .stream import StreamedDataset

SUFFIXES = (".txt", ".jsonl")


@hookimpl
def onnxopt_open_dataset(source: str, model: ir.Model, options: dict[str, Any]) -> StreamedDataset | None:
    text, raw = src.split(source)
    path = Path(text).expanduser()
    if path.suffix.lower() not in SUFFIXES:
        return None
    from .text_reader import open_text  # numpy and tokenizers load when text is read, not at start-up

    return open_text(path, source, raw, model, options)
