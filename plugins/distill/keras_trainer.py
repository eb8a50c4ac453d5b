"""The keras backend's trainer: the same objective and early stopping as the torch one, in TensorFlow.

The student is a ``keras.Model`` a user's ``module:function`` built. It trains with a ``tf.GradientTape``
step (Adam), keeps the weights of the best validation epoch (0: the student as given), and is saved as ``.keras`` beside
``job.output``: the loader plugin for Keras files (tf2onnx) turns it into ONNX when the distill plugin
loads it through the ``onnxopt_load_model`` hook, and the distill plugin gives it the teacher's input and
output names. TensorFlow runs with ``hyper.threads`` intra-op threads when it has not started yet.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from onnxopt import UsageError

from .losses import MIN_PROBABILITY, weights
from .training import Split, TrainingJob, TrainingResult, agreement, batches

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402 - after the log level, which TensorFlow reads at import
import tensorflow as tf  # noqa: E402


def _set_threads(count: int) -> None:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(count)
        tf.config.threading.set_inter_op_parallelism_threads(count)
    except RuntimeError:  # TensorFlow already started in this process: its thread pools are fixed
        pass


class _Objective:
    def __init__(self, job: TrainingJob) -> None:
        self.job = job
        self.model = job.student

    def scores(self, inputs: list[Any], training: bool) -> Any:
        out = self.model(inputs if len(inputs) > 1 else inputs[0], training=training)
        if isinstance(out, (list, tuple)):
            out = out[self.job.target]
        return tf.math.log(tf.maximum(out, MIN_PROBABILITY)) if self.job.probabilities else out

    def loss(self, student: Any, teacher: Any, labels: Any | None) -> Any:
        hyper = self.job.hyper
        soft, hard = weights(hyper.alpha, labels is not None)
        if hyper.loss == "mse":
            term = tf.reduce_mean(tf.square(student - teacher))
        else:
            t = hyper.temperature
            p_teacher = tf.nn.softmax(teacher / t)
            kl = tf.reduce_sum(p_teacher * (tf.nn.log_softmax(teacher / t) - tf.nn.log_softmax(student / t)), axis=-1)
            term = tf.reduce_mean(kl) * t * t
        if hard:
            ce = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, student, from_logits=True))
            term = soft * term + hard * ce
        return term

    def score(self, split: Split) -> tuple[float, float]:
        inputs = [split.inputs[name] for name in self.job.input_names]
        scores = self.scores(inputs, training=False)
        loss = float(self.loss(scores, tf.constant(split.teacher, tf.float32), split.labels))
        if self.job.hyper.loss == "mse":
            return -loss, 0.0
        return agreement(np.asarray(scores), split.teacher), -loss


class KerasTrainer:
    name = "keras"

    def fit(self, job: TrainingJob) -> TrainingResult:
        hyper = job.hyper
        if hyper.loss not in ("kl", "mse"):
            raise UsageError(
                f"the keras backend trains with loss kl or mse, not {hyper.loss!r} (give --loss, or a torch student)"
            )
        _set_threads(hyper.threads)
        keras.utils.set_random_seed(hyper.seed)
        objective = _Objective(job)
        model = job.student
        steps = hyper.epochs * -(-len(job.train) // hyper.batch_size)
        lr = keras.optimizers.schedules.CosineDecay(hyper.lr, steps) if hyper.cosine else hyper.lr
        optimizer = keras.optimizers.Adam(lr)
        has_labels = job.train.labels is not None

        @tf.function(reduce_retracing=True)
        def step(inputs: list[Any], teacher: Any, labels: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = objective.loss(objective.scores(inputs, training=True), teacher, labels if has_labels else None)
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        rng = np.random.default_rng(hyper.seed)
        train = job.train
        # the student as given is the one to beat: training that never does hands it back
        best, best_weights = objective.score(job.val if job.val is not None else train), model.get_weights()
        result = TrainingResult(epochs=0, best_epoch=0, best_score=best[0])
        for epoch in job.progress(range(1, hyper.epochs + 1), total=hyper.epochs, desc="distill"):
            total = 0.0
            for index in batches(len(train), hyper.batch_size, rng):
                inputs = [tf.constant(train.inputs[name][index]) for name in job.input_names]
                labels = tf.constant(train.labels[index]) if has_labels else tf.constant(0)
                total += float(step(inputs, tf.constant(train.teacher[index], tf.float32), labels)) * len(index)
            score = objective.score(job.val if job.val is not None else train)
            result.epochs = epoch
            result.history.append(
                {"epoch": epoch, "loss": total / len(train), "val_score": score[0], "val_loss": -score[1]}
            )
            if best is None or score > best:
                best, result.best_score, result.best_epoch = score, score[0], epoch
                best_weights = model.get_weights()
            elif hyper.patience and epoch - result.best_epoch >= hyper.patience:
                break
        model.set_weights(best_weights)
        result.model_file = job.output.with_suffix(".keras")
        model.save(result.model_file)
        return result
