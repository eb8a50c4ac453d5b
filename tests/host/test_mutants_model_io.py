"""model_io's external-data location checks on the tensors a model really has: every tensor checked (not only
up to the first one stored inline), a location that is missing or holds a NUL byte refused with its reason.

Written to kill mutants of :func:`onnxopt.model_io.external_data_files` that survived the rest of the suite
(issue 20, bench/README.md "Mutation testing"); the symlink escapes are in tests/host/test_model_io.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt import model_io
from onnxopt.errors import ModelError


def _model(tmp_path: Path, location: str | None) -> onnx.ModelProto:
    """Two initializers: ``inline`` stored in the file (first), ``w`` external at ``location`` (None: no key)."""
    inline = numpy_helper.from_array(np.ones(2, np.float32), "inline")
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    if location is not None:
        w.external_data.add(key="location", value=location)
    w.external_data.add(key="length", value="8")
    (tmp_path / "w.data").write_bytes(np.ones(2, np.float32).tobytes())
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "inline"], ["t"]), helper.make_node("Add", ["t", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [inline, w],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_tensor_after_an_inline_one_is_checked_too(tmp_path):
    assert model_io.external_data_files(_model(tmp_path, "w.data"), tmp_path) == {(tmp_path / "w.data").resolve()}
    (tmp_path / "sub").mkdir()
    with pytest.raises(
        ModelError, match="tensor 'w': external data location '../w.data' is outside the model's folder"
    ):
        model_io.external_data_files(_model(tmp_path / "sub", "../w.data"), tmp_path / "sub")


@pytest.mark.parametrize(
    ("location", "message"),
    [(None, "tensor 'w': external data location '' must be a relative path"),
     ("w\0.data", "tensor 'w': external data location 'w\\x00.data' holds a NUL byte")],
    ids=["no-location", "nul-byte"],
)  # fmt: skip
def test_a_missing_or_nul_location_is_refused_with_its_reason(tmp_path, location, message):
    with pytest.raises(ModelError) as error:
        model_io.external_data_files(_model(tmp_path, location), tmp_path)
    assert str(error.value) == message
