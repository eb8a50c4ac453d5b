"""distill: retrain a smaller student on the teacher's outputs, and hand back an ONNX student.

The teacher is the run's original model; its outputs on the run's data are computed once with
onnxruntime and cached (:mod:`.logits`). The student is the model in the pipeline, an ONNX file, a
``module:function`` building a torch or keras model, or any of these narrowed by ``width`` through the
``prune`` pass, and / or made shallower by dropping repeated encoder blocks found in the graph
(``depth``, :mod:`.depth`) (:mod:`.students`). Training is a backend's job, found through the
``onnxopt_distill_trainer`` hook, which this plugin declares (:mod:`.hookspecs`): :mod:`.torch_backend` (ONNX
students via :mod:`.onnx_to_torch`, and ``torch.nn.Module`` s) and :mod:`.keras_backend` (``keras.Model`` s) ship
here. The objective is in :mod:`.losses`, chosen from the teacher's output unless ``loss`` names one.
``onnxopt distill`` (a command this plugin adds, :mod:`.command`) runs this pass with the input model as the teacher.

Used as ``--pass distill:width=0.5,epochs=30`` after other passes, the pass retrains what they left
(e.g. a pruned model, not judged on its own) against the original. The pass says it ``retrains``: the student is a
different model that should agree, so the default verdict judges it by agreement (task metrics, top-1 on class
scores, a cosine floor; :data:`onnxopt.gates.RETRAINED`), not by the 0.99 cosine of a model meant to be the same.

This module only declares the pass, the hook and the command: importing it loads none of numpy, onnx_ir,
onnxruntime or a training framework (the CLI imports every plugin before it parses); the pass itself,
:class:`.distiller.DistillPass`, is imported when a distillation is to run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from onnxopt import PassOptions, PassSpec, SearchDim, SearchHint, hookimpl, option

if TYPE_CHECKING:
    from onnxopt import RunContext

    from .distiller import DistillPass


@dataclass(frozen=True)
class DistillOptions(PassOptions):
    student: str = option(
        "",
        "'' (the model in the pipeline), a student .onnx file, or module:function / file.py:function building a "
        "torch or keras model",
    )
    width: float = option(
        1.0, "narrow the (ONNX) student to this fraction of its channels / hidden units with structured prune",
        gt=0, le=1,
    )  # fmt: skip
    reconstruct: bool = option(
        True, "width < 1: re-fit the narrowed student's layers to the model it was cut from on the training data "
        "before training (prune-structured's least-squares reconstruct): a far better start",
    )  # fmt: skip
    epochs: int = option(30, "at most this many passes over the training data", ge=1)
    batch_size: int = option(32, "rows per optimizer step", ge=1)
    lr: float = option(1e-3, "Adam learning rate", gt=0)
    cosine: bool = option(True, "decay the learning rate to zero over the epochs on a cosine")
    alpha: float = option(
        0.7, "weight of the teacher term; 1 - alpha weighs cross-entropy on the labels (when the data has labels)",
        ge=0, le=1,
    )  # fmt: skip
    temperature: float = option(4.0, "softmax temperature T of the KL term (scaled by T^2)", gt=0)
    loss: Literal["auto", "kl", "ctc", "bce", "embedding", "mse"] = option(
        "auto",
        "auto: from the output's shape and range; kl: class scores / sequence logits (per step); ctc: per-step kl "
        "plus CTC towards the teacher's greedily decoded sequences (a CTC head, blank 0); "
        "bce: probability maps; embedding: MSE + cosine; mse: regression heads",
    )
    batch_norm: Literal["train", "frozen"] = option(
        "train", "BatchNormalization in an ONNX student while it trains: train normalizes by each batch and updates "
        "the running statistics to the data's; frozen keeps the statistics it starts from (when batch statistics "
        "wreck the student in its first epoch, as they did PP-OCRv4 rec on rendered lines)",
    )  # fmt: skip
    patience: int = option(
        10, "stop after this many epochs without better validation agreement (then loss) (0: never)", ge=0
    )
    val: str = option("", "held-out .npz for early stopping and the report (default: val_fraction of the data)")
    val_fraction: float = option(0.1, "rows of the data held out for validation when no val file is given", ge=0, lt=1)
    target: str = option("", "the teacher output to distill on (default: the first)")
    backend: str = option("auto", "training backend: auto, torch, keras, or one a plugin provides")
    threads: int = option(0, "framework intra-op threads while training (0: every core this process may use)", ge=0)
    max_time: float = option(
        0.0, "stop training after this many seconds (the learning rate decays over them; 0: no budget)", ge=0
    )
    device: str = option("cpu", "torch device: cpu, cuda (cuda:N), or auto (cuda when torch sees one)")
    checkpoint: str = option("", "save the training state here after every epoch; resume from it when it exists")
    depth: float = option(
        1.0, "keep this fraction of the (ONNX) student's repeated encoder blocks (0.5: half of them dropped)",
        gt=0, le=1,
    )  # fmt: skip
    layers: Literal["search", "spread"] = option(
        "search", "which blocks depth < 1 keeps: search (dropped one at a time, the one the teacher's held-out "
        "outputs miss least) or spread (evenly from the first: DistilBERT's every other one)",
    )  # fmt: skip
    match_layers: bool = option(
        False, "depth < 1: also train each kept layer's output towards the teacher's hidden state that the next kept "
        "layer reads there (MSE + cosine)",
    )  # fmt: skip
    layer_weight: float = option(1.0, "weight of the match_layers term beside the output's", ge=0)
    cache_dir: str = option(
        "", "where teacher outputs are cached (default: $ONNXOPT_CACHE_DIR/logits or ~/.cache/onnxopt/logits)"
    )
    export_logits: bool = option(False, "only compute (and cache) the teacher's outputs; the model is left unchanged")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.match_layers and self.depth >= 1.0:  # refused before any work, not after the teacher ran
            raise ValueError("match_layers needs a student with encoder layers dropped (depth < 1)")


def _create(options: DistillOptions, context: RunContext) -> DistillPass:
    from .distiller import DistillPass  # numpy, onnx_ir and onnxruntime load when distill runs, not at start-up

    return DistillPass(options, context)


@hookimpl
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    register(
        PassSpec(
            name="distill",
            summary="retrain a student (pipeline model, .onnx, module:function, or width-narrowed) on the original "
            "model's outputs",
            create=_create,
            options=DistillOptions,
            search=SearchHint((SearchDim("width", (0.25, 0.5, 0.75, 1.0)),), stage=10, on_request=True),
            needs_data=True,
            handles_subgraphs=False,
            retrains=lambda options: not options.export_logits,
        )
    )


@hookimpl
def onnxopt_addhooks(add: Callable[[object], None]) -> None:
    from . import hookspecs

    add(hookspecs)


@hookimpl
def onnxopt_register_commands(add_command: Callable[..., object]) -> None:
    from .command import add_command as add_distill

    add_distill(add_command)


def __getattr__(name: str) -> object:
    """``from onnxopt_plugins.distill import distill``: the Python API of ``onnxopt distill``, loaded on use."""
    if name == "distill":
        from .command import distill

        return distill
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
