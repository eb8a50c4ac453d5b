"""Reading the text file :mod:`.text` claimed: its examples, tokenized with the model's own tokenizer.json, as
the model's ids / mask / type-id inputs, padded feed by feed.

The ``tokenizers`` package tokenizes; written here: which input takes which tokenizer output, the check of the
tokenizer's vocabulary against the model's embedding table (onnx_ir), and the padding (numpy).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxopt import DataError, InputSpec, UsageError, input_specs

from . import source as src
from .stream import Feed, StreamedDataset, batching, pick

DEFAULT_MAX_LENGTH = 128
OPTIONS: dict[str, src.Parser] = {
    **src.SAMPLES,
    "tokenizer": src.existing_file,
    "max_length": src.positive_int,
    "padding": src.choice("longest", "max", "bucket"),
    "field": str,
}
ROLES = ("input_ids", "attention_mask", "token_type_ids")
PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>")
VALUE_OPS = {"Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten"}  # ops that pass ids on unchanged


def _role(name: str) -> str | None:
    lowered = name.lower()
    if lowered in ROLES:
        return lowered
    if "mask" in lowered:
        return "attention_mask"
    if "type" in lowered or "segment" in lowered:
        return "token_type_ids"
    if "ids" in lowered or lowered.startswith("input"):
        return "input_ids"
    return None


def map_inputs(specs: list[InputSpec], source: str) -> dict[str, str]:
    """Model input name -> the tokenizer output it takes; a one-line DataError if an input is none of them."""
    roles: dict[str, str] = {}
    for spec in specs:
        role = _role(spec.name)
        if role is None or role in roles.values():
            raise DataError(f"{source}: the model input {spec.name!r} is not one of {', '.join(ROLES)} "
                            f"(use a loader script: --data loader.py:load_data)")  # fmt: skip
        if spec.dims is None or len(spec.dims) != 2 or spec.dtype.kind not in "iu":
            raise DataError(
                f"{source}: the model input {spec.name!r} {spec.dtype} {spec.shape_text} "
                "is not [batch, sequence] integers"
            )
        roles[spec.name] = role
    if "input_ids" not in roles.values():
        raise DataError(f"{source}: no model input takes token ids (inputs: {', '.join(s.name for s in specs)})")
    return roles


def _tensor(value: ir.Value) -> Any:
    if value.const_value is not None:
        return value.const_value
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].value
    return None


def embedding_table(model: ir.Model, ids_input: str) -> tuple[str, int] | None:
    """The name and row count of the table the token ids index (a Gather fed by the input), if found."""
    frontier = [v for v in model.graph.inputs if v.name == ids_input]
    seen: set[int] = set()
    while frontier:
        value = frontier.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        for node, index in value.uses():
            if node.op_type == "Gather" and index == 1:
                table = _tensor(node.inputs[0])
                if table is not None and len(table.shape) >= 1:
                    return node.inputs[0].name or node.name or "Gather", int(table.shape[0])
            elif node.op_type in VALUE_OPS and index == 0:
                frontier.extend(node.outputs)
    return None


def _examples(path: Path, field: str) -> list[str | tuple[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if path.suffix.lower() == ".txt":
        return [line for line in lines if line.strip()]
    examples: list[str | tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
        value = item.get(field) if isinstance(item, dict) else item
        if isinstance(value, str):
            examples.append(value)
        elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            examples.append((value[0], value[1]))
        else:
            raise DataError(
                f"{path}:{number}: expected a string, or an object whose {field!r} is a string or a pair of strings"
            )
    return examples


def _tokenizer(path: Path) -> Any:
    tokenizers = src.require("tokenizers", "tokenizers", "tokenizing text")
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises plain Exceptions
        raise DataError(f"{path}: not a readable tokenizer.json ({str(exc).splitlines()[0]})") from None


def _pad_id(tokenizer: Any) -> int:
    if tokenizer.padding:
        return int(tokenizer.padding["pad_id"])
    return next((tokenizer.token_to_id(t) for t in PAD_TOKENS if tokenizer.token_to_id(t) is not None), 0)


def open_text(
    path: Path, source: str, raw: dict[str, str], model: ir.Model, options: dict[str, Any]
) -> StreamedDataset:
    """The text file at ``path`` tokenized for the model's inputs, as ``raw`` (the source's options) asks."""
    values = src.parse(source, "a text file", raw, OPTIONS)
    if "tokenizer" not in values:
        raise UsageError(f"{source!r}: text needs its tokenizer: add ?tokenizer=path/to/tokenizer.json")
    if not path.is_file():
        raise DataError(f"{path}: no such text file")
    specs = input_specs(model)
    roles = map_inputs(specs, source)
    ids_name = next(name for name, role in roles.items() if role == "input_ids")
    tokenizer = _tokenizer(values["tokenizer"])
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    table = embedding_table(model, ids_name)
    if table is not None and vocab > table[1]:
        raise DataError(f"{values['tokenizer']}: the tokenizer has {vocab} token ids, the model's embedding table "
                        f"{table[0]!r} only {table[1]} rows (is it this model's tokenizer.json?)")  # fmt: skip
    seq = specs[0].dims[1]
    fixed = seq if isinstance(seq, int) else None
    max_length = values.get("max_length", fixed or DEFAULT_MAX_LENGTH)
    padding = values.get("padding", "max")
    if fixed and (max_length != fixed or padding != "max"):
        raise UsageError(
            f"{source!r}: the model fixes the sequence length at {fixed}: use max_length={fixed},padding=max"
        )
    examples = _examples(path, values.get("field", "text"))
    if not examples:
        raise DataError(f"{path}: no examples (blank file)")
    chosen = [examples[i] for i in pick(len(examples), values.get("samples"), options.get("seed", 0))]
    pad_id = _pad_id(tokenizer)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    encodings = tokenizer.encode_batch(chosen)
    rows, usable = batching(specs[0].dims[0], len(encodings), options, source)
    order = sorted(range(usable), key=lambda i: len(encodings[i].ids)) if padding == "bucket" else range(usable)
    columns = {
        "input_ids": [e.ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
        "token_type_ids": [e.type_ids for e in encodings],
    }
    dtypes = {spec.name: spec.dtype for spec in specs}
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0}

    def feeds() -> Iterator[Feed]:
        for start in range(0, usable, rows):
            batch_rows = [order[i] for i in range(start, min(start + rows, usable))]
            length = max_length if padding == "max" else max(len(encodings[i].ids) for i in batch_rows)
            feed = {}
            for name, role in roles.items():
                array = np.full((len(batch_rows), length), fill[role], dtype=dtypes[name])
                for row, i in enumerate(batch_rows):
                    tokens = columns[role][i]
                    array[row, : len(tokens)] = tokens
                feed[name] = array
            yield feed

    picked = f"{usable} of {len(examples)} examples" if usable < len(examples) else f"{usable} examples"
    mapped = ", ".join(f"{role}->{name}" if role != name else name for name, role in roles.items())
    description = (f"text: {picked}, tokenizer {values['tokenizer'].name} ({vocab} ids), max_length {max_length}, "
                   f"padding {padding}, inputs {mapped}")  # fmt: skip
    return StreamedDataset(str(path), specs, feeds, num_feeds=-(-usable // rows), num_samples=usable,
                           batched=set(roles), description=description)  # fmt: skip
