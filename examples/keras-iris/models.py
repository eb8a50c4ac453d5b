"""The Keras models of the example: the iris teacher (4 -> 10 relu -> 3 softmax) and a student half as wide.

Both standardize their input with a Normalization layer holding the iris feature statistics, so the
exported ONNX models take raw measurements (cm) like the Keras ones. ``build_student`` takes no
arguments: it is what ``onnxopt distill --student models.py:build_student`` calls.
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402


def _mlp(hidden: int, seed: int) -> keras.Model:
    features = load_iris().data.astype(np.float32)
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((4,), name="input"),
        keras.layers.Normalization(mean=features.mean(0), variance=features.var(0), name="standardize"),
        keras.layers.Dense(hidden, activation="relu", name="hidden"),
        keras.layers.Dense(3, activation="softmax", name="probabilities"),
    ])  # fmt: skip


def build_teacher() -> keras.Model:
    return _mlp(10, seed=0)


def build_student() -> keras.Model:
    return _mlp(5, seed=1)
