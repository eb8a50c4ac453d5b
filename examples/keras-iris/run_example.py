"""A Keras MLP trained on iris, exported, then quantized, pruned, clustered and distilled with onnxopt.

Run from anywhere (needs ``pip install 'onnxopt[tf]'``; the width-derived student also uses
``onnxopt[torch]`` when installed)::

    python examples/keras-iris/run_example.py [--out DIR]

Every step is checked, not just run, because the well-known tutorial of this workflow gets each one wrong:
its "quantization" writes int32 copies of the weights into float layers (nothing gets smaller, nothing
runs in int8), and its "pruning" indexes the weights with a shape, not with a mask. Here:

- export: the ONNX model gives the Keras model's probabilities (max |diff| printed, must be < 1e-5);
- quantize: every weight feeding MatMul / Gemm is stored as int8 (a quarter of the float bytes) with a
  float scale and read through DequantizeLinear, and the model stays accurate in onnxruntime;
- prune: a fifth of each Dense kernel is exactly zero, chosen by magnitude (a mask, not a shape), or the
  hidden layer really is 5 wide (structured), and accuracy is measured;
- cluster: each kernel holds at most 16 distinct values;
- distill: a 5-unit Keras student retrained on the teacher's outputs (keras backend), and the same from
  the teacher narrowed by structured pruning (torch backend), agree with the teacher.

A step that fails its check stops the script with a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

import onnxopt
from onnxopt_plugins.distill import distill

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from models import build_teacher  # noqa: E402


def split(out: Path) -> tuple[Path, Path]:
    iris = load_iris()
    x, y = iris.data.astype(np.float32), iris.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=45, stratify=y, random_state=0)
    np.savez(out / "train.npz", input=x_train, labels=y_train)
    np.savez(out / "val.npz", input=x_val, labels=y_val)
    return out / "train.npz", out / "val.npz"


def accuracy(model: Path, data: Path) -> float:
    npz = np.load(data)
    scores = ort.InferenceSession(str(model)).run(None, {"input": npz["input"]})[0]
    return float((scores.argmax(1) == npz["labels"]).mean())


def kernels(model: Path) -> dict[str, np.ndarray]:
    """The 2-D float weights of the Dense layers, by initializer name."""
    graph = onnx.load(model).graph
    return {
        t.name: numpy_helper.to_array(t)
        for t in graph.initializer
        if len(t.dims) == 2 and t.data_type == onnx.TensorProto.FLOAT
    }


def check(condition: bool, message: str) -> None:
    print(("  ok: " if condition else "  FAILED: ") + message)
    if not condition:
        sys.exit(1)


def optimize(source: Path, out: Path, passes: list, data: Path, max_drop: float = 0.0) -> Path:
    """Run passes; the gate is accuracy on the held-out flowers, not output cosine (pruning moves outputs)."""
    report = onnxopt.optimize(
        source, out, passes=passes, data=data, gates={"min_cosine": 0.0, "max_accuracy_drop": max_drop}
    )
    check(report.exit_code == 0 and report.steps[-1].status == "kept", f"{out.name}: {report.message or 'written'}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the files (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="keras-iris-"))
    out.mkdir(parents=True, exist_ok=True)
    train, val = split(out)
    x_val = np.load(val)["input"]

    print("1. train the Keras teacher (4 -> 10 relu -> 3 softmax) and save it")
    teacher = build_teacher()
    teacher.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    npz = np.load(train)
    teacher.fit(npz["input"], npz["labels"], epochs=300, batch_size=16, verbose=0)
    teacher.save(out / "iris.keras")
    keras_probabilities = teacher.predict(x_val, verbose=0)

    print("2. export: onnxopt loads iris.keras through tf2onnx (the keras_loader plugin) and folds it")
    fp32 = optimize(out / "iris.keras", out / "iris_fp32.onnx", ["fold"], val)
    onnx_probabilities = ort.InferenceSession(str(fp32)).run(None, {"input": x_val})[0]
    diff = float(np.abs(onnx_probabilities - keras_probabilities).max())
    check(diff < 1e-5, f"ONNX gives Keras' probabilities (max |diff| {diff:.1e})")
    base = accuracy(fp32, val)
    print(f"  teacher accuracy on {len(x_val)} held-out flowers: {base:.4f}")

    print("3. quantize: static int8, calibrated on the training flowers")
    int8 = optimize(fp32, out / "iris_int8.onnx", [("quantize", {"mode": "static"})], train, max_drop=0.05)
    graph = onnx.load(int8).graph
    types = {t.name: t.data_type for t in graph.initializer}
    dequantized = [
        n for n in graph.node if n.op_type == "DequantizeLinear" and types.get(n.input[0]) == onnx.TensorProto.INT8
    ]
    weights = [n.input[1] for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    fed = {n.output[0] for n in dequantized}
    check(
        bool(weights) and all(w in fed for w in weights),
        "every MatMul / Gemm weight is int8 read through DequantizeLinear",
    )
    check(
        not any(t.data_type == onnx.TensorProto.INT32 and len(t.dims) == 2 for t in graph.initializer),
        "no int32 weight matrices",
    )
    weight_bytes = {name: w.nbytes for name, w in kernels(fp32).items()}
    int8_bytes = sum(
        numpy_helper.to_array(t).nbytes
        for t in graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2
    )
    check(
        int8_bytes * 4 == sum(weight_bytes.values()),
        f"weight matrices {sum(weight_bytes.values())} -> {int8_bytes} bytes (int8: 1/4)",
    )
    print(
        f"  file {fp32.stat().st_size} -> {int8.stat().st_size} bytes "
        "(for 70 weights the Q/DQ nodes outweigh the saving), "
        f"accuracy {accuracy(int8, val):.4f}"
    )

    print("4. prune")
    sparse = optimize(fp32, out / "iris_pruned.onnx", [("prune", {"sparsity": 0.2, "min_elements": 1})], val,
                      max_drop=0.05)  # fmt: skip
    zero_share = {name: round(float((w == 0).mean()), 3) for name, w in kernels(sparse).items()}
    check(
        all(abs(share - 0.2) <= 0.04 for share in zero_share.values()), f"a fifth of each kernel is zero: {zero_share}"
    )
    print(
        f"  magnitude 20 %: accuracy {accuracy(sparse, val):.4f} "
        "(30 % already costs a third of it: 70 weights have no slack)"
    )
    narrow = optimize(fp32, out / "iris_narrow.onnx", [("prune-structured", {"sparsity": 0.5, "round_to": 1})], val,
                      max_drop=1.0)  # fmt: skip
    shapes = sorted(w.shape for w in kernels(narrow).values())
    first = next(shape for shape in shapes if 4 in shape)  # the input layer's kernel: 4 x hidden
    hidden = first[1] if first[0] == 4 else first[0]
    check(hidden == 5, f"the hidden layer really is 5 wide: kernels {shapes}")
    print(f"  structured 50 %: accuracy {accuracy(narrow, val):.4f} before retraining (distilled in step 6)")

    print("5. cluster: 16 shared values per kernel")
    clustered = optimize(
        fp32,
        out / "iris_clustered.onnx",
        [("cluster", {"k": 16, "min_elements": 1, "encoding": "snap"})],
        val,
        max_drop=0.05,
    )
    unique = {name: int(np.unique(w).size) for name, w in kernels(clustered).items()}
    check(all(count <= 16 for count in unique.values()), f"distinct values per kernel: {unique}")
    print(f"  accuracy {accuracy(clustered, val):.4f}")

    print("6. distill")
    student = out / "iris_student_keras.onnx"
    report = distill(fp32, student, data=train, val=val, student=f"{HERE / 'models.py'}:build_student",
                             backend="keras", epochs=300, lr=0.01, batch_size=16, patience=50)  # fmt: skip
    check(report.exit_code == 0, f"keras student: {report.message or 'written'}")
    stats = report.steps[0].stats
    print(
        f"  keras student ({stats['student_parameters']} vs {stats['teacher_parameters']} parameters): "
        f"{stats['validation']}"
    )
    if importlib.util.find_spec("torch") is None:
        print("  (torch not installed: the width-derived student is skipped)")
    else:
        derived = out / "iris_student_width.onnx"
        report = distill(fp32, derived, data=train, val=val, width=0.5, epochs=300, lr=0.01, batch_size=16, patience=50)
        check(report.exit_code == 0, f"width-derived student: {report.message or 'written'}")
        stats = report.steps[0].stats
        print(f"  teacher narrowed to width 0.5, retrained (torch): {stats['validation']}")
        for name, model in (("keras", student), ("width", derived)):
            check(accuracy(model, val) >= base - 0.07, f"{name} student within 3 flowers of the teacher")
    print(f"files in {out}")


if __name__ == "__main__":
    main()
