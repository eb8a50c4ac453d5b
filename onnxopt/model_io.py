"""Loading and saving models safely.

Written here rather than taken whole from ``onnx_ir.load`` / ``onnx_ir.save`` because a release pipeline
needs more than they promise: every way a file can be wrong becomes a one-line :class:`ModelError`, external
data may never point outside the model's folder, and a save is atomic — the new model and its external
data are written into a temporary folder beside the destination and renamed into place, under a lock on
the destination folder so two processes writing the same path leave one complete model, never a mix.
Tensors stay lazy (memory-mapped by onnx_ir) on load, so a multi-GB model is not copied into memory.
A type onnx_ir cannot hold (a scikit-learn ZipMap's ``sequence<map<int64, float>>``) rides in the value's
metadata from load to save, so such a model is optimized where onnx_ir can and written back as it declared.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import math
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from onnxopt.errors import ModelError

#: Above this many bytes of tensor data a model is saved with external data (protobuf's hard limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1 << 30
#: Tensors smaller than this stay inside the .onnx file even when external data is used.
EXTERNAL_TENSOR_MIN_BYTES = 1024


def _graph_and_subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph``, then every If / Loop / Scan body nested in it, at any depth."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graph_and_subgraphs(attr.g)
            for sub in attr.graphs:
                yield from _graph_and_subgraphs(sub)


def _iter_graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    for each in _graph_and_subgraphs(graph):
        yield from each.initializer
        for sparse in each.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in each.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors


def _external_location(tensor: onnx.TensorProto) -> dict[str, str] | None:
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return {entry.key: entry.value for entry in tensor.external_data}


def external_data_files(proto: onnx.ModelProto, model_dir: Path) -> set[Path]:
    """Every external data file the model refers to, checked to lie inside ``model_dir``."""
    files: set[Path] = set()
    root = model_dir.resolve()
    for tensor in _iter_graph_tensors(proto.graph):
        info = _external_location(tensor)
        if info is None:
            continue
        location = info.get("location", "")
        if "\0" in location:
            raise ModelError(f"tensor {tensor.name!r}: external data location {location!r} holds a NUL byte")
        if not location or os.path.isabs(location) or Path(location).drive:
            raise ModelError(f"tensor {tensor.name!r}: external data location {location!r} must be a relative path")
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise ModelError(
                f"tensor {tensor.name!r}: external data location {location!r} is outside the model's folder"
            )
        files.add(target)
    return files


def _check_external_data(proto: onnx.ModelProto, model_dir: Path) -> None:
    files = external_data_files(proto, model_dir)
    sizes = {}
    for path in files:
        if not path.is_file():
            state = "not a regular file" if path.exists() else "missing"
            raise ModelError(f"external data file {path.name!r} is {state} (expected in {model_dir})")
        sizes[path] = path.stat().st_size
    root = model_dir.resolve()
    for tensor in _iter_graph_tensors(proto.graph):
        info = _external_location(tensor)
        if info is None:
            continue
        offset = int(info.get("offset", 0) or 0)
        expected = _tensor_nbytes(tensor)
        length = int(info.get("length", expected) or 0)
        if expected is not None and length < expected:
            raise ModelError(
                f"tensor {tensor.name!r}: external data length {length} "
                f"is shorter than its shape needs ({expected} bytes)"
            )
        path = (root / info["location"]).resolve()
        if offset + length > sizes[path]:
            raise ModelError(
                f"tensor {tensor.name!r}: external data file {path.name!r} is shorter than declared "
                f"({sizes[path]} bytes, tensor needs bytes {offset}..{offset + length})"
            )


def _tensor_nbytes(tensor: onnx.TensorProto) -> int | None:
    """The byte size the tensor's shape and dtype imply, or None for dtypes without a fixed size."""
    try:
        dtype = ir.DataType(tensor.data_type)
    except ValueError:
        return None
    if dtype in (ir.DataType.STRING, ir.DataType.UNDEFINED):
        return None
    return math.ceil(math.prod(tensor.dims) * dtype.bitwidth / 8)


def read_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Read a model file's protobuf without its external data, turning every failure into a ModelError."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        if "MaxDepth" in str(exc):  # upb's recursion limit: 100 nested messages, about 32 nested If / Loop bodies
            raise ModelError(
                f"{path}: nested too deep to read (If / Loop / Scan bodies inside each other beyond "
                f"protobuf's limit of 100 nested messages)"
            ) from exc
        raise ModelError(f"{path}: not an ONNX model, or truncated (protobuf: {exc})") from exc
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except Exception as exc:  # onnx raises a variety of errors for malformed files
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    if not proto.HasField("graph") or not proto.opset_import or proto.ir_version <= 0:
        raise ModelError(f"{path}: a protobuf message but not an ONNX model (no graph, opset or IR version)")
    bad_text = _non_utf8_field(proto)
    if bad_text is not None:
        raise ModelError(f"{path}: {bad_text} is not valid UTF-8 text")
    return proto


def _non_utf8_field(message: Message, where: str = "model") -> str | None:
    """The path of the first text field holding bytes that are not UTF-8, or None.

    protobuf hands such a field over as ``bytes``; onnx's checker and onnxruntime accept it, but onnx_ir
    cannot write the model back (UnicodeDecodeError), so a corrupted name would crash the save.
    """
    if isinstance(message, onnx.TensorProto):  # its text fields only: ListFields would copy every raw_data
        texts = [("name", message.name), ("doc_string", message.doc_string)]
        texts += [
            (f"external_data[{i}]", text) for i, e in enumerate(message.external_data) for text in (e.key, e.value)
        ]
        return next((f"{where}.{name}" for name, text in texts if isinstance(text, bytes)), None)
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if _is_repeated(field) else [value]
            for index, text in enumerate(values):
                if isinstance(text, bytes):
                    return f"{where}.{field.name}" + (f"[{index}]" if _is_repeated(field) else "")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            children = value if _is_repeated(field) else [value]
            for index, child in enumerate(children):
                found = _non_utf8_field(child, f"{where}.{field.name}" + (f"[{index}]" if _is_repeated(field) else ""))
                if found is not None:
                    return found
    return None


def _is_repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf 7 dropped ``label``; older releases lack ``is_repeated``
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


def _for_checker(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The proto with its external tensors emptied, for onnx's checker.

    Given a proto, the checker looks for external data files relative to the current directory, not the
    model's folder, so a valid model loaded from elsewhere would be rejected; :func:`_check_external_data`
    checks the files against the model's folder instead.
    """
    if not any(_external_location(tensor) is not None for tensor in _iter_graph_tensors(proto.graph)):
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for tensor in _iter_graph_tensors(copy.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.dims[:] = [0]
    return copy


def check_proto(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Run onnx's checker on a model whose external data stays on disk; a rejection is a ModelError."""
    try:
        onnx.checker.check_model(_for_checker(proto))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: rejected by the ONNX checker: {first}") from exc
    except ValueError as exc:  # e.g. "Message onnx.ModelProto exceeds maximum protobuf size of 2GB"
        raise ModelError(f"{path}: rejected by the ONNX checker: {exc}") from exc
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None:
        _check_attribute_names(proto.graph, opset, path)


def _check_attribute_names(graph: onnx.GraphProto, opset: int, path: str | os.PathLike) -> None:
    """Every attribute of a standard op is one its schema declares.

    The checker misses this for ops defined as functions (an ``axis`` misspelt on LayerNormalization
    passes it, and onnxruntime ignores the attribute), yet the model is not what it claims to be and a
    pass that checks its own output against the schema would be blamed for it.
    """
    for node in (node for each in _graph_and_subgraphs(graph) for node in each.node):
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            declared = onnx.defs.get_schema(node.op_type, opset, "").attributes
        except onnx.defs.SchemaError:
            continue  # an unknown op: the checker's to report
        for attr in node.attribute:
            if attr.name not in declared:
                raise ModelError(
                    f"{path}: node {node.name or node.op_type!r}: {node.op_type} has no attribute "
                    f"{attr.name!r} in opset {opset}"
                )


def _densify_sparse_initializers(graph: onnx.GraphProto, model_dir: Path) -> None:
    """Turn every ``sparse_initializer`` into a dense initializer, in the graph and its subgraphs.

    onnx_ir 1.1 drops sparse initializers when it reads a model, which would leave their readers dangling.
    onnxruntime densifies them at session start anyway, so the model computes the same.
    """
    for each in _graph_and_subgraphs(graph):
        for sparse in each.sparse_initializer:
            values = onnx.numpy_helper.to_array(sparse.values, str(model_dir))
            indices = onnx.numpy_helper.to_array(sparse.indices, str(model_dir)).astype(np.int64)
            dense = np.zeros(tuple(sparse.dims), values.dtype)
            if indices.ndim == 1:
                dense.reshape(-1)[indices] = values
            else:
                dense[tuple(indices.T)] = values
            each.initializer.append(onnx.numpy_helper.from_array(dense, sparse.values.name))
        del each.sparse_initializer[:]


#: Key of the value metadata that carries a type onnx_ir cannot model (base64 of its TypeProto) from load to save.
KEPT_TYPE_KEY = "onnxopt.kept_type"


def _ir_can_model(type_proto: onnx.TypeProto) -> bool:
    """Whether onnx_ir can hold this type: tensors, sparse tensors and sequences / optionals of them (no maps)."""
    kind = type_proto.WhichOneof("value")
    if kind == "sequence_type":
        return _ir_can_model(type_proto.sequence_type.elem_type)
    if kind == "optional_type":
        return _ir_can_model(type_proto.optional_type.elem_type)
    return kind not in ("map_type", "opaque_type")


def _value_infos(proto: onnx.ModelProto) -> Iterator[onnx.ValueInfoProto]:
    for graph in _graph_and_subgraphs(proto.graph):
        yield from graph.input
        yield from graph.output
        yield from graph.value_info
    for function in proto.functions:
        yield from function.value_info


def _set_aside_types(proto: onnx.ModelProto) -> None:
    """Move every type onnx_ir cannot model (a scikit-learn ZipMap's ``sequence<map<int64, float>>``) into the
    value's metadata, leaving the value untyped for onnx_ir; :func:`_restore_types` puts it back on save.

    Kept in the value's metadata rather than beside the model, so it follows the value through ``clone()`` and
    through a pass that converts to protobuf and back.
    """
    for info in _value_infos(proto):
        if info.HasField("type") and not _ir_can_model(info.type):
            entry = info.metadata_props.add()
            entry.key, entry.value = KEPT_TYPE_KEY, base64.b64encode(info.type.SerializeToString()).decode("ascii")
            info.ClearField("type")


def _restore_types(proto: onnx.ModelProto) -> bool:
    """Put back the types :func:`_set_aside_types` kept; whether there were any."""
    restored = False
    for info in _value_infos(proto):
        kept = [entry for entry in info.metadata_props if entry.key == KEPT_TYPE_KEY]
        if kept:
            info.type.ParseFromString(base64.b64decode(kept[-1].value))
            others = [(e.key, e.value) for e in info.metadata_props if e.key != KEPT_TYPE_KEY]
            del info.metadata_props[:]
            for key, value in others:
                info.metadata_props.add(key=key, value=value)
            restored = True
    return restored


def kept_type_text(value: ir.Value) -> str | None:
    """The type :func:`load` set aside for ``value``, spelt as ``seq(map(int64, float))``."""
    kept = value.metadata_props.get(KEPT_TYPE_KEY)
    if kept is None:
        return None
    return _type_text(onnx.TypeProto.FromString(base64.b64decode(kept)))


def _type_text(type_proto: onnx.TypeProto) -> str:
    kind = type_proto.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        return ir.DataType(getattr(type_proto, kind).elem_type).name.lower()
    if kind == "sequence_type":
        return f"seq({_type_text(type_proto.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({_type_text(type_proto.optional_type.elem_type)})"
    if kind == "map_type":
        key = ir.DataType(type_proto.map_type.key_type).name.lower()
        return f"map({key}, {_type_text(type_proto.map_type.value_type)})"
    return kind or "unknown"


def load(path: str | os.PathLike, *, check: bool = True) -> ir.Model:
    """Load an ONNX file into onnx_ir, its external tensors left lazy on disk.

    Raises :class:`ModelError` with one line for a missing, empty, truncated or non-ONNX file, external data
    that is missing, short or outside the model's folder, and (with ``check``) a model the checker rejects.
    """
    path = Path(path)
    proto = read_proto(path)
    _check_external_data(proto, path.parent)
    if check:
        check_proto(proto, path)
    _densify_sparse_initializers(proto.graph, path.parent)
    _set_aside_types(proto)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as exc:
        raise ModelError(f"{path}: cannot be read into onnx_ir ({type(exc).__name__}: {exc})") from exc
    ir.external_data.set_base_dir(model.graph, str(path.parent))
    return model


def tensor_bytes(model: ir.Model) -> int:
    """Bytes of all initializer data in the model, subgraphs included, without loading external data."""
    total = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is not None:
                total += tensor.nbytes
    return total


def has_external_tensors(model: ir.Model) -> bool:
    """Whether any initializer's data lies in an external file."""
    return any(
        isinstance(value.const_value, ir.ExternalTensor)
        for graph in model.graphs()
        for value in graph.initializers.values()
    )


def data_file_name(path: str | os.PathLike) -> str:
    """The name of the external data file saved beside ``path``."""
    return Path(path).name + ".data"


def file_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a model file plus every external data file it refers to.

    Parsing a self-contained model only to learn it has no data files costs a copy of its weights in memory
    (the report asks this of the original and every candidate): a file whose bytes never spell the key of an
    external location has none, so it is parsed only when they do (a weight may spell it by chance; then the
    parse decides).
    """
    path = Path(path)
    if path.is_file() and not _mentions_location(path):
        return path.stat().st_size
    proto = read_proto(path)  # also the one-line error for a path that is not a readable model
    return path.stat().st_size + sum(f.stat().st_size for f in external_data_files(proto, path.parent))


def _mentions_location(path: Path) -> bool:
    """:func:`_mentions` of the location key, remembered per file version (a run sizes each file several times)."""
    stat = path.stat()
    return _mentions_cached(str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _mentions_cached(path: str, inode: int, size: int, mtime_ns: int) -> bool:
    return _mentions(Path(path), b"location")


def _mentions(path: Path, needle: bytes, chunk: int = 1 << 20) -> bool:
    """Whether ``needle`` occurs in the file, read a chunk at a time (no mapping: mapped pages count as resident)."""
    keep = len(needle) - 1  # bytes of one chunk that may start a match ending in the next
    tail = b""
    try:
        with open(path, "rb") as file:
            while block := file.read(chunk):
                if needle in block or needle in tail + block[:keep]:
                    return True
                tail = (tail + block[-keep:])[-keep:] if keep else b""
    except OSError:
        return True  # the parse reports it
    return False


@contextlib.contextmanager
def _locked_folder(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then act as they would have: the renames that publish a
    model and its data file are never cut between the two (an old model beside new data).

    Done with Python-level handlers, not a signal mask: any thread of the process (onnxruntime's pools) may take
    the signal, and Python always runs its handler in the main thread. Off the main thread, nothing is deferred.
    """
    signals = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]
    if threading.current_thread() is not threading.main_thread() or not signals:
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in signals}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _writable_folder(path: Path) -> Path:
    folder = path.parent
    if not folder.is_dir():
        raise ModelError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ModelError(f"{path}: output folder {folder} is not writable")
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, not a file name")
    _check_replaceable(path)
    return folder


def _check_replaceable(path: Path) -> None:
    """A save replaces ``path`` by a rename: only a regular file (or nothing) may be there.

    A FIFO, a device or a socket would be swapped for a regular file (as root, ``-o /dev/null`` would replace
    the system's /dev/null). A symbolic link is followed for the check, as the user named what it points to.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return  # a new path, or a dangling link (the rename replaces the link)
    except OSError as exc:
        raise ModelError(f"{path}: cannot check the output path ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        raise ModelError(f"{path}: not a regular file (a device, FIFO or socket); write to a file path")


def check_writable(path: str | os.PathLike) -> None:
    """Fail early, before any work, if ``path`` cannot be written."""
    _writable_folder(Path(path).absolute())


def _replace_all(staged: list[Path], folder: Path, backups: Path) -> None:
    """Rename each staged file into ``folder`` in order; if a rename fails, put back the files already replaced.

    The files a save writes are replaced one by one, so a failure after the first (the model's rename, once
    its data is in place) would otherwise leave the old model beside the new data.
    """
    done: list[tuple[Path, Path | None]] = []
    try:
        for file in staged:
            target = folder / file.name
            backup = None
            if target.exists():
                backup = backups / (file.name + ".old")
                try:
                    os.link(target, backup)
                except OSError:  # a file system without hard links
                    shutil.copy2(target, backup)
            os.replace(file, target)
            done.append((target, backup))
    except OSError:
        for target, backup in reversed(done):
            with contextlib.suppress(OSError):
                if backup is None:
                    target.unlink()
                else:
                    os.replace(backup, target)
        raise


@contextlib.contextmanager
def _initializer_annotations_hidden(model: ir.Model) -> Iterator[None]:
    """onnx_ir writes a value_info entry for every initializer, repeating what the tensor already says.

    Hidden for the write (a few percent of a small model's file), restored afterwards for later passes.
    """
    saved = []
    for graph in model.graphs():
        inputs = {value.name for value in graph.inputs}
        for value in graph.initializers.values():
            if value.name not in inputs and not value.is_graph_output() and value.const_value is not None:
                saved.append((value, value.type, value.shape))
                value.type = value.shape = None
    try:
        yield
    finally:
        for value, type_, shape in saved:
            value.type, value.shape = type_, shape


def save(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    before_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically and return the path.

    ``external_data=None`` chooses: external data (``<name>.data`` beside the file) when the model already
    had external tensors or holds more than :data:`EXTERNAL_DATA_THRESHOLD` bytes, else one self-contained
    file. Nothing at ``path`` changes unless the whole write succeeded. ``before_replace(staged)`` is called
    with the complete staged file before it replaces anything: what it reads is exactly what this call
    publishes, whatever another process writes to ``path`` at the same time.
    """
    if external_data is None:
        external_data = writes_external_data(model)
    data_name = data_file_name(path)
    return _publish(
        path,
        lambda staged: _write_staged(model, staged, data_name, external_data, Path(path)),
        external_data,
        before_replace,
    )


def save_with_outputs(model: ir.Model, values: Iterable[ir.Value], path: str | os.PathLike) -> Path:
    """Write the part of ``model`` that computes ``values`` (intermediate values, or outputs) to ``path``, with
    them as its outputs, to read them in onnxruntime, which runs every node of a graph whatever output is asked
    for: a layer's input early in the graph costs that far only. ``model`` itself is left as it is (a clone is
    cut; tensors are shared, not copied). A value with no declared type is declared float: onnxruntime needs a
    type on every output, and what a pass probes (a layer's activations, a hidden state) is float."""
    import onnx_ir.passes.common

    names = list(dict.fromkeys(value.name for value in values))
    probe = model.clone()
    found = {value.name: value for value in probe.graph.inputs}
    found.update((value.name, value) for node in probe.graph for value in node.outputs)
    probe.graph.outputs.clear()
    for name in names:
        value = found[name]
        value.type = value.type or ir.TensorType(ir.DataType.FLOAT)
        probe.graph.outputs.append(value)
    onnx_ir.passes.common.RemoveUnusedNodesPass()(probe)
    return save(probe, path)  # external data as the model needs it, so this also works past 2 GB


def writes_external_data(model: ir.Model) -> bool:
    """Whether :func:`save` with ``external_data=None`` writes ``model``'s tensors to a data file beside it."""
    return has_external_tensors(model) or tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD


def save_copy(
    source: str | os.PathLike, path: str | os.PathLike, *, before_replace: Callable[[Path], None] | None = None
) -> Path:
    """Publish a copy of the self-contained model file ``source`` at ``path``, atomically as :func:`save` does.

    A run has already serialized its best model once, to check and validate it; the file it writes is that
    file's bytes, not a second serialization.
    """

    def copy(staged: Path) -> list[Path]:
        try:
            shutil.copyfile(source, staged)
            _fsync(staged)
        except OSError as exc:
            raise ModelError(f"{path}: write failed ({exc.strerror or exc}); nothing was replaced") from exc
        return [staged]

    return _publish(path, copy, False, before_replace)


def _publish(
    path: str | os.PathLike,
    write: Callable[[Path], list[Path]],
    external_data: bool,
    before_replace: Callable[[Path], None] | None,
) -> Path:
    """Stage the files ``write`` makes (the model last) beside ``path``, then move them all in place at once."""
    path = Path(path).absolute()
    folder = _writable_folder(path)
    data_name = data_file_name(path)
    if external_data:
        _check_replaceable(folder / data_name)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder))
    except OSError as exc:
        raise ModelError(f"{path}: cannot write to {folder} ({exc.strerror or exc})") from exc
    try:
        staged = write(staging / path.name)
        if before_replace is not None:
            before_replace(staged[-1])
        try:
            with _signals_deferred(), _locked_folder(folder):
                stale = _own_data_file(path, data_name)
                _replace_all(staged, folder, staging)
                if stale is not None and len(staged) == 1:  # the new model is self-contained
                    with contextlib.suppress(OSError):
                        stale.unlink()
        except OSError as exc:
            raise ModelError(f"{path}: write failed ({exc.strerror or exc}); nothing was replaced") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _has_kept_types(model: ir.Model) -> bool:
    """Whether any value carries a type :func:`load` set aside (so the staged file must be patched)."""
    values = (
        value
        for graph in (*model.graphs(), *model.functions.values())
        for value in (*graph.inputs, *graph.outputs, *(out for node in graph for out in node.outputs))
    )
    return any(KEPT_TYPE_KEY in value.metadata_props for value in values)


def _restore_kept_types(staged_model: Path) -> None:
    """Rewrite the staged file with the types onnx_ir could not model put back (its external data untouched)."""
    proto = onnx.load(str(staged_model), load_external_data=False)
    if _restore_types(proto):
        onnx.save(proto, str(staged_model))


def _own_data_file(path: Path, data_name: str) -> Path | None:
    """``<name>.data`` beside ``path`` if the model now at ``path`` keeps its tensors there (a previous save),
    else None.

    Only that file, and only when the model being replaced refers to it: a file of that name the old model does
    not use, or beside a model that cannot be read, may be someone else's and is left alone.
    """
    data = path.with_name(data_name)
    if not data.is_file() or not path.is_file():
        return None
    try:
        referenced = external_data_files(read_proto(path), path.parent)
    except ModelError:
        return None
    return data if data.resolve() in referenced else None


def _write_staged(
    model: ir.Model, staged_model: Path, data_name: str, external_data: bool, destination: Path
) -> list[Path]:
    """Write the model (and its data file) into the staging folder, synced; data first, model last."""
    try:
        with _initializer_annotations_hidden(model):
            if external_data:
                ir.save(model, staged_model, external_data=data_name, size_threshold_bytes=EXTERNAL_TENSOR_MIN_BYTES)
            else:
                ir.external_data.load_to_model(model)
                ir.save(model, staged_model)
        if _has_kept_types(model):
            _restore_kept_types(staged_model)
        data = staged_model.with_name(data_name)
        staged = [data, staged_model] if data.exists() else [staged_model]  # data first: never missing data
        for file in staged:
            _fsync(file)
    except OSError as exc:
        raise ModelError(f"{destination}: write failed ({exc.strerror or exc}); nothing was replaced") from exc
    except ValueError as exc:  # onnx refuses a proto over 2 GB
        raise ModelError(f"{destination}: cannot serialize the model ({exc})") from exc
    return staged
