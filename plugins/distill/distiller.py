"""One distillation, start to end: teacher outputs -> student -> trainer -> ONNX student -> validation.

The teacher is the run's original model (``context.reference_path``), the training data the run's
dataset; validation rows come from ``options.val`` or are held out of the training data. Training itself
is a backend's job (the ``onnxopt_distill_trainer`` hook); this module prepares the job, checks what the
trainer wrote, and measures the student against the teacher in onnxruntime on the validation rows.
:class:`DistillPass` is the ``distill`` pass the package declares: one :class:`Distillation` of the model it gets.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxopt import (
    LABELS_KEY,
    DataError,
    Dataset,
    FunctionalPluginPass,
    PluginError,
    RunContext,
    UsageError,
    compare,
    count_parameters,
    from_arrays,
    load_arrays,
    save,
    save_with_outputs,
)

from . import logits, students
from .hyper import DistillHyperparameters
from .losses import MIN_PROBABILITY, SCORES, Score, choose, sums_to_one
from .training import Split, TrainingJob

if TYPE_CHECKING:
    from . import DistillOptions

#: held-out rows a depth search scores each candidate on (one onnxruntime run each; 15 candidates for 6 -> 3)
DEPTH_SEARCH_ROWS = 64
#: teacher targets are computed and copied in blocks of rows of about this many bytes
_TARGET_BLOCK_BYTES = 64 << 20
_EXTRAS = {"torch": "onnxopt[torch]", "keras": "onnxopt[tf]", "auto": "onnxopt[torch] (ONNX students) or onnxopt[tf]"}


def dataset_rows(dataset: Dataset) -> dict[str, np.ndarray]:
    """Every input of the dataset as one array stacked on the batch axis (distillation shuffles rows)."""
    if dataset.synthetic:
        raise UsageError("distill trains on real data: give --data train.npz (random inputs teach nothing)")
    unbatched = [spec.name for spec in dataset.specs if not dataset.is_batched(spec.name)]
    if unbatched:
        raise DataError(f"distill needs every input stacked on the batch axis; {', '.join(unbatched)} is not")
    feeds = list(dataset.feeds())
    return {spec.name: np.concatenate([feed[spec.name] for feed in feeds]) for spec in dataset.specs}


def _fed_inputs(model: ir.Model) -> list[ir.Value]:
    """The inputs a caller feeds (an old-IR initializer listed as an input is not one)."""
    return [v for v in model.graph.inputs if v.name not in model.graph.initializers]


def _has_batch_norm(student: object) -> bool:
    """An ONNX student with BatchNormalization (whose statistics ``batch_norm`` decides how it trains)."""
    return isinstance(student, ir.Model) and any(n.op_type == "BatchNormalization" for n in student.graph.all_nodes())


def _probabilities(teacher: ir.Model, output: str, outputs: np.ndarray) -> bool:
    """The output is a softmax: made by one, or probabilities along its last axis whatever made them."""
    value = next(v for v in teacher.graph.outputs if v.name == output)
    producer = value.producer()
    return (producer is not None and producer.op_type == "Softmax") or sums_to_one(outputs)


def _targets(outputs: np.ndarray, probabilities: bool, into: np.ndarray | None = None) -> np.ndarray:
    """What the loss compares with: log-probabilities for a softmax output (into ``into``, in row blocks, when
    given), else the outputs themselves."""
    if not probabilities:
        return outputs
    if into is None:
        return np.log(np.clip(outputs, MIN_PROBABILITY, None))
    for rows in _blocks(outputs):
        np.log(np.clip(outputs[rows], MIN_PROBABILITY, None), out=into[rows])
    return into


def _blocks(array: np.ndarray) -> Iterator[slice]:
    """Slices of ``array``'s rows of about :data:`_TARGET_BLOCK_BYTES` each."""
    block = max(1, _TARGET_BLOCK_BYTES // max(1, array[:1].nbytes))
    for start in range(0, len(array), block):
        yield slice(start, start + block)


def _global_pools(graph: ir.Graph) -> None:
    """ReduceMean over every spatial axis (keepdims) -> GlobalAveragePool, as the teacher had it.

    torch.onnx writes global average pooling as ReduceMean; onnxruntime's quantizer has an int8 kernel for
    GlobalAveragePool and none for ReduceMean, so a squeeze-excite CNN student quantized ran 1.3x slower."""
    for node in list(graph):
        if node.op_type != "ReduceMean" or node.attributes.get_int("keepdims", 1) != 1:
            continue
        data = node.inputs[0]
        axes = node.inputs[1].const_value if len(node.inputs) > 1 and node.inputs[1] is not None else None
        axes = axes.numpy().tolist() if axes is not None else node.attributes.get_ints("axes", None)
        if data.shape is None or len(data.shape) < 3 or axes is None:
            continue
        rank = len(data.shape)
        if sorted(a % rank for a in axes) != list(range(2, rank)):
            continue
        pool = ir.node("GlobalAveragePool", [data])
        graph.insert_before(node, pool)
        ir.convenience.replace_all_uses_with(node.outputs[0], pool.outputs[0], replace_graph_outputs=True)
        axes_input = node.inputs[1] if len(node.inputs) > 1 else None
        graph.remove(node, safe=True)
        if axes_input is not None and not axes_input.uses() and axes_input.name in graph.initializers:
            del graph.initializers[axes_input.name]


class Distillation:
    """See the module docstring: ``run`` returns the trained student, ``export_logits`` only fills the cache."""

    def __init__(self, options: DistillOptions, context: RunContext) -> None:
        self.options = options
        self.context = context
        self.teacher_path = context.reference_path
        if self.teacher_path is None or context.dataset is None:
            raise UsageError("distill needs a teacher model and training data (--data)")
        self.teacher = self.context.load(self.teacher_path)
        self.cache = Path(options.cache_dir) if options.cache_dir else None
        self._scratch = itertools.count()

    def _outputs(self, inputs: dict[str, np.ndarray], target: str | None = None) -> logits.TeacherOutputs:
        """The teacher's ``target`` output on ``inputs`` (every tensor output when None: a sequence or map output,
        a classifier's ZipMap, has no array to cache and nothing trains on it), from the cache or computed."""
        outputs = self.teacher.graph.outputs
        names = [target] if target is not None else [v.name for v in outputs if isinstance(v.type, ir.TensorType)]
        found = logits.teacher_outputs(
            self.teacher_path, inputs, names, cache_dir=self.cache, progress=self.context.progress
        )
        self.context.stats.setdefault("teacher_outputs", []).append(
            {"files": {name: str(file) for name, file in found.files.items()}, "reused": found.cached}
        )
        return found

    def _hidden_states(self, matched: dict[str, str], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{student value: the teacher's values ``matched`` pairs it with, on ``inputs``}, computed (and cached)
        from a copy of the teacher that lists those values among its outputs."""
        values = {value.name: value for node in self.teacher.graph for value in node.outputs}
        wanted = sorted(set(matched.values()))
        missing = [name for name in wanted if name not in values]
        if missing:
            raise UsageError(f"match_layers: the teacher has no value {missing[0]!r} (the student's layers were "
                             "found in a graph whose names differ from the teacher's)")  # fmt: skip
        probed = [*self.teacher.graph.outputs, *(values[name] for name in wanted)]
        path = save_with_outputs(self.teacher, probed, self.context.workdir / "teacher-hidden-states.onnx")
        found = logits.teacher_outputs(path, inputs, wanted, cache_dir=self.cache, progress=self.context.progress)
        return {student_name: found.outputs[name] for student_name, name in matched.items()}

    def _splits(self, target: str) -> tuple[Split, Split | None, bool]:
        """(training rows, validation rows, whether the target output is a softmax)."""
        dataset = self.context.dataset
        inputs = dataset_rows(dataset)
        outputs = self._outputs(inputs, target).outputs[target]
        probabilities = _probabilities(self.teacher, target, outputs)
        train = Split(inputs, self._targets(outputs, probabilities), dataset.labels)
        if self.options.val:
            val_set = from_arrays(self.options.val, load_arrays(self.options.val), self.teacher)
            val_inputs = dataset_rows(val_set)
            val_teacher = self._targets(self._outputs(val_inputs, target).outputs[target], probabilities)
            return train, Split(val_inputs, val_teacher, val_set.labels), probabilities
        count = int(round(len(train) * self.options.val_fraction))
        if count == 0:
            return train, None, probabilities
        order = self.context.rng(7).permutation(len(train))
        return self._subset(train, order[count:]), train.rows(order[:count]), probabilities

    def _subset(self, split: Split, index: np.ndarray) -> Split:
        """``split.rows(index)``, its teacher outputs copied in blocks to a memory-mapped scratch file when they are
        memory-mapped themselves (a fancy index would load the training rows' outputs whole)."""
        if not isinstance(split.teacher, np.memmap):
            return split.rows(index)
        teacher = self._scratch_array((len(index), *split.teacher.shape[1:]), split.teacher.dtype)
        for rows in _blocks(teacher):
            teacher[rows] = split.teacher[index[rows]]
        labels = None if split.labels is None else split.labels[index]
        return Split({name: array[index] for name, array in split.inputs.items()}, teacher, labels)

    def _targets(self, outputs: np.ndarray, probabilities: bool) -> np.ndarray:
        """:func:`_targets` of the memory-mapped teacher outputs, written to a memory-mapped scratch file: the
        log-probabilities are as large as the outputs, and need not sit in memory either."""
        if not probabilities:
            return outputs
        return _targets(outputs, True, self._scratch_array(outputs.shape, np.float32))

    def _scratch_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.memmap:
        """A new array memory-mapped from a file in the run's folder (gone with the run)."""
        scratch = self.context.workdir / f"teacher-targets-{next(self._scratch)}.npy"
        return np.lib.format.open_memmap(scratch, mode="w+", dtype=dtype, shape=shape)

    def _target(self) -> str:
        names = [v.name for v in self.teacher.graph.outputs]
        wanted = self.options.target or names[0]
        if wanted not in names:
            raise UsageError(f"distill: the teacher has no output {wanted!r} (outputs: {', '.join(names)})")
        return wanted

    def export_logits(self) -> None:
        self._outputs(dataset_rows(self.context.dataset))

    def run(self, current: ir.Model) -> ir.Model:
        o, stats = self.options, self.context.stats
        target = self._target()
        train, val, probabilities = self._splits(target)
        loss = choose(train.teacher, probabilities) if o.loss == "auto" else o.loss
        if loss == "ctc" and train.teacher.ndim != 3:
            raise UsageError(f"distill: loss ctc needs per-step scores [batch, steps, classes]; output {target!r} is "
                             f"{list(train.teacher.shape)}")  # fmt: skip
        if loss not in ("kl", "ctc"):  # trained as an embedding, a map or a regression head: its arg-max means nothing
            self.context.not_class_scores.add(target)
        search = o.layers == "search" and o.depth < 1.0
        score = self._depth_score(val or train, loss, target, probabilities) if search else None
        student, description, matched = students.resolve(
            o.student, current, o.width, o.depth, self.context, score, o.reconstruct
        )
        if o.match_layers:
            matched = {student_value: name for student_value, name in matched.items() if student_value != target}
            if not matched:
                raise UsageError("match_layers: the kept layers' only output is the one distilled on")
            train = replace(train, hidden=self._hidden_states(matched, train.inputs))
            self.context.stats["matched_states_trained"] = matched
        trainer = self.context.hook.onnxopt_distill_trainer(backend=o.backend, student=student)
        if trainer is None:
            kind = "an ONNX student" if isinstance(student, ir.Model) else type(student).__name__
            extra = _EXTRAS.get(o.backend, f"a plugin providing the {o.backend!r} backend")
            raise UsageError(f"no training backend {o.backend!r} for {kind}: install {extra}")
        output = self.context.workdir / f"distilled-{id(self)}.onnx"
        hyper = DistillHyperparameters(
            epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, cosine=o.cosine, alpha=o.alpha,
            temperature=o.temperature, loss=loss, patience=o.patience, seed=self.context.seed, threads=o.threads,
            max_time=o.max_time, device=o.device, checkpoint=o.checkpoint, layer_weight=o.layer_weight,
            batch_norm=o.batch_norm,
        )  # fmt: skip
        job = TrainingJob(
            student=student, train=train, val=val, input_names=[v.name for v in _fed_inputs(self.teacher)],
            output_names=[v.name for v in self.teacher.graph.outputs],
            target=[v.name for v in self.teacher.graph.outputs].index(target), probabilities=probabilities,
            hyper=hyper, output=output, progress=self.context.progress, logger=self.context.logger,
        )  # fmt: skip
        started = time.monotonic()
        result = trainer.fit(job)
        seconds = time.monotonic() - started
        trained = self._checked(result.model_file or output, trainer.name)
        stats.update(
            student=description, backend=trainer.name, train_rows=len(train), val_rows=len(val) if val else 0,
            loss=loss, held_out_score=SCORES[loss], best_score=result.best_score, train_seconds=round(seconds, 1),
            epochs=result.epochs, best_epoch=result.best_epoch, history=result.history,
            teacher_parameters=count_parameters(self.teacher), student_parameters=count_parameters(trained),
        )  # fmt: skip
        if result.best_epoch == 0:
            batch_norm = o.batch_norm == "train" and _has_batch_norm(student)
            self.context.logger.warning(
                "distill: no epoch beat the student it started from on the held-out rows (%s %.4g): it is written "
                "as given; try a lower --lr%s or more data", SCORES[loss], result.best_score,
                ", --batch-norm frozen (its BatchNormalization trained on batch statistics)" if batch_norm else "",
            )  # fmt: skip
        if val is not None:
            stats["validation"] = self._validate(save(trained, output.with_name(output.stem + "-named.onnx")), val)
        return trained

    def _depth_score(self, rows: Split, loss: str, target: str, probabilities: bool) -> Callable[[ir.Model], float]:
        """How close a candidate's ``target`` output is to the teacher's on the first :data:`DEPTH_SEARCH_ROWS`
        held-out rows (the loss's own score, in onnxruntime): what the depth search ranks layer choices by. The
        output is found by position, as the trainer finds it (a student file may name its outputs otherwise)."""
        some = rows.rows(np.arange(min(len(rows), DEPTH_SEARCH_ROWS)))
        trial = self.context.workdir / "depth-trial.onnx"
        position = [v.name for v in self.teacher.graph.outputs].index(target)

        def score(candidate: ir.Model) -> float:
            save(candidate, trial)
            outputs = list(logits.outputs_of(trial, some.inputs).values())[position]
            meter = Score(loss)
            meter.update(_targets(outputs, probabilities), some.teacher)
            return meter.value()

        return score

    def _checked(self, output: Path, backend: str) -> ir.Model:
        """The trained student as written, loaded through the loader plugins, with the teacher's names."""
        if not output.exists():
            raise PluginError(backend, f"the trainer wrote no student at {output}")
        trained = self.context.load(output, check=False)
        for kind, want, got in (
            ("inputs", _fed_inputs(self.teacher), _fed_inputs(trained)),
            ("outputs", self.teacher.graph.outputs, trained.graph.outputs),
        ):
            if len(want) != len(got):
                raise PluginError(backend, f"the student has {len(got)} {kind}, the teacher {len(want)}")
            for theirs, ours in zip(want, got):
                ours.name = theirs.name  # same order, the teacher's names: a drop-in replacement
        _global_pools(trained.graph)
        graph = trained.graph  # the exporter's stack traces, signature notes and value_info: kilobytes of noise
        for value in (*graph.inputs, *graph.outputs, *graph.initializers.values()):
            value.metadata_props.clear()
        for node in graph.all_nodes():
            node.metadata_props.clear()
            for value in node.outputs:
                value.metadata_props.clear()
                if not value.is_graph_output():
                    value.shape, value.type = None, None
        return trained

    def _validate(self, student: Path, val: Split) -> dict[str, Any]:
        """Step 5: teacher vs student in onnxruntime on the validation rows (agreement, accuracy)."""
        arrays: dict[str, np.ndarray] = dict(val.inputs)
        if val.labels is not None:
            arrays[LABELS_KEY] = val.labels
        dataset = from_arrays("validation rows", arrays, self.teacher)
        result = compare(self.teacher_path, student, dataset, None, latency_runs=0, context=self.context)
        figures: dict[str, Any] = {"rows": len(val)}
        agreements = [o.top1_agreement for o in result.outputs if o.top1_agreement is not None]
        if agreements:
            figures["top1_agreement"] = round(agreements[0], 4)
        if result.accuracy_reference is not None:
            figures["teacher_accuracy"] = round(result.accuracy_reference, 4)
            figures["student_accuracy"] = round(result.accuracy_candidate, 4)
        return figures


class DistillPass(FunctionalPluginPass):
    """The trained student in place of the model given (the model unchanged when only exporting teacher outputs)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        distillation = Distillation(self.options, self.context)
        if self.options.export_logits:
            distillation.export_logits()
            return ir.passes.PassResult(model.clone(), modified=False)
        return ir.passes.PassResult(distillation.run(model), modified=True)
