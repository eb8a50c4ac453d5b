"""keras_loader: ``onnxopt optimize model.keras`` (or a SavedModel folder) converts with tf2onnx first.

So a TensorFlow pipeline can call onnxopt right after ``model.save("model.keras")`` or
``model.export("saved_model/")``: the model is converted once in memory, the passes run on the ONNX
graph, and the original (converted) model is the validation reference. Needs the ``onnxopt[tf]`` extra
(tensorflow-cpu + tf2onnx), imported only when such a file is loaded.

The conversion is tf2onnx's; written here is only the glue: Keras 3 models lack the ``output_names``
tf2onnx 1.17's ``from_keras`` reads (it fails with ``KeyError: 'keras_tensor_N'``), so they are set from
the output layers' names first, and SavedModels convert through their ``serving_default`` signature with
``from_function``. Inputs keep their Keras names and a dynamic batch dimension. onnx_ir too is imported only
when a model is read: the CLI imports this module on every command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxopt import ModelError, hookimpl

if TYPE_CHECKING:
    import onnx_ir as ir

KERAS_SUFFIXES = (".keras", ".h5")
DEFAULT_OPSET = 17


def is_tensorflow_model(path: Path) -> bool:
    return path.suffix in KERAS_SUFFIXES or (path.is_dir() and (path / "saved_model.pb").is_file())


def _frameworks() -> tuple[Any, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not the user's business
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        raise ModelError(
            f"converting Keras / SavedModel files needs the tf extra: pip install 'onnxopt[tf]' ({exc})"
        ) from exc
    return tf, tf2onnx


def keras_to_onnx(model: Any, opset: int = DEFAULT_OPSET) -> Any:
    """An in-memory ``keras.Model`` as an ONNX ModelProto (input names kept, batch dimension dynamic)."""
    tf, tf2onnx = _frameworks()
    signature = tuple(tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name.split(":")[0]) for t in model.inputs)
    if not getattr(model, "output_names", None) or any(n.startswith("keras_tensor") for n in model.output_names):
        model.output_names = [t._keras_history.operation.name for t in model.outputs]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    return proto


def saved_model_to_onnx(folder: Path, opset: int = DEFAULT_OPSET) -> Any:
    tf, tf2onnx = _frameworks()
    loaded = tf.saved_model.load(str(folder))
    if "serving_default" not in loaded.signatures:
        raise ModelError(f"{folder}: the SavedModel has no serving_default signature to convert")
    function = loaded.signatures["serving_default"]
    specs = function.structured_input_signature[1]
    signature = tuple(tf.TensorSpec(spec.shape, spec.dtype, name=name) for name, spec in specs.items())
    proto, _ = tf2onnx.convert.from_function(tf.function(function), input_signature=signature, opset=opset)
    return proto


@hookimpl
def onnxopt_load_model(path: str, options: dict[str, Any]) -> ir.Model | None:
    source = Path(path)
    if not is_tensorflow_model(source):
        return None
    if not source.exists():
        raise ModelError(f"{source}: no such file")
    opset = int(options.get("opset", DEFAULT_OPSET))
    if source.is_dir():
        proto = saved_model_to_onnx(source, opset)
    else:
        tf, _ = _frameworks()
        try:
            model = tf.keras.models.load_model(str(source), compile=False)
        except Exception as exc:  # Keras raises ValueError, OSError, ... for a file it cannot read
            raise ModelError(f"{source}: Keras cannot load it: {type(exc).__name__}: {exc}") from exc
        proto = keras_to_onnx(model, opset)
    import onnx_ir as ir  # loaded with the model it reads, not at start-up like this module

    return ir.from_proto(proto)
