"""A user's function as data: ``--data loader.py:load_data`` or ``--data mypackage.data:load_data``.

Polygraphy's convention (``--data-loader-script``): the function takes no arguments and returns an iterable of
feed dicts, input name -> array. The module is imported when the dataset is opened, never when the command
line is parsed. Written here: the whole iterable is walked once at open time, every feed checked against
the model's inputs (names, dtypes, shapes), so a loader that raises or yields the wrong names is a one-line
error before any pass runs; later reads call the function again when it returned a one-shot iterator (a
generator), or walk the same list again. Nothing is kept in memory that the loader did not keep itself.

An input is batched (samples on its leading axis) when its first dim is open or 1; a state ``[2, ?, 128]``
or a scalar is the same kind of thing in every feed. numpy and onnx_ir load in :func:`open_loader`, not when the
CLI imports this plugin on every command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from onnxopt import REFERENCE, DataError, hookimpl, load_function

from . import source as src

if TYPE_CHECKING:
    import onnx_ir as ir

    from onnxopt import InputSpec

    from .stream import Feed, StreamedDataset

HOST_PREFIXES = {"synthetic"}  # ``synthetic:N`` is the host's


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _call(function: Callable[[], Any], where: str) -> Any:
    try:
        return function()
    except Exception as exc:
        raise DataError(f"{where} raised {_first_line(exc)}") from None


def _items(result: Any, where: str) -> Iterator[Any]:
    """The items of what the loader returned, any exception raised on the way a one-line DataError."""
    try:
        items = iter(result)
    except TypeError:
        raise DataError(f"{where} returned a {type(result).__name__}, not an iterable of feed dicts") from None
    index = 0
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except Exception as exc:
            raise DataError(f"{where} raised {_first_line(exc)} making feed {index}") from None
        yield item
        index += 1


def _batched(spec: InputSpec) -> bool:
    return bool(spec.dims) and (not isinstance(spec.dims[0], int) or spec.dims[0] == 1)


def open_loader(target: str, name: str, source: str, model: ir.Model) -> StreamedDataset:
    from onnxopt import input_specs  # numpy and onnx_ir load when a loader is called, not at start-up

    from .stream import StreamedDataset, check_feed

    where = f"{target}:{name}"
    function = load_function(f"{target}:{name}", error=DataError)
    specs = input_specs(model)
    batched = {spec.name for spec in specs if _batched(spec)}
    result = _call(function, where)
    count = samples = 0
    for count, feed in enumerate(_items(result, where), 1):
        arrays = check_feed(feed, specs, f"{where}: feed {count - 1}")
        rows = {arrays[n].shape[0] for n in batched if arrays[n].ndim}
        if len(rows) > 1:
            raise DataError(
                f"{where}: feed {count - 1}: batched inputs hold different numbers of rows ({sorted(rows)})"
            )
        samples += rows.pop() if rows else 1
    if not count:
        raise DataError(f"{where} yielded no feeds")
    reusable = isinstance(result, (list, tuple))  # a list is walked again; a generator is made again

    def feeds() -> Iterator[Feed]:
        for index, feed in enumerate(_items(result if reusable else _call(function, where), where)):
            yield check_feed(feed, specs, f"{where}: feed {index}")

    return StreamedDataset(source, specs, feeds, num_feeds=count, num_samples=samples, batched=batched,
                           description=f"loader: {count} feeds, {samples} samples")  # fmt: skip


def parse_target(text: str) -> tuple[str, str] | None:
    """``('loader.py', 'load_data')`` for ``loader.py:load_data`` / ``pkg.mod:fn``, else None."""
    match = REFERENCE.match(text)
    if match is None or match["target"] in HOST_PREFIXES:
        return None
    return match["target"], match["function"]


@hookimpl
def onnxopt_open_dataset(source: str, model: ir.Model, options: dict[str, Any]) -> StreamedDataset | None:
    text, raw = src.split(source)
    target = parse_target(text)
    if target is None:
        return None
    src.parse(source, "a loader function", raw, {})
    return open_loader(*target, text, model)
