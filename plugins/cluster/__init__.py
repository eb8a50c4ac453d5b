"""cluster: k-means weight sharing (as TF-MOT offers for Keras) for any ONNX model, with a compact encoding.

Each chosen weight — the constant weight input of Conv, ConvTranspose, Gemm and MatMul, the input and recurrent
weights (W, R) of LSTM / GRU / RNN, or the table of a Gather (embeddings), with at least ``min_elements`` values;
biases and norm parameters are never chosen — is clustered into ``k`` centroids per tensor or per output channel,
a recurrent weight's channels being the gate rows of each direction (:mod:`.kmeans`). ``binarize`` is the
two-level case: a sign per weight and a scale per channel (XNOR-Net's binary weights), stored as 1-bit indices.
Two encodings:

- ``snap``: the values are replaced by their centroids, dtype unchanged. The file is as large as before but
  compresses well, and int8 quantization can follow (clustered, then quantized).
- ``codebook`` (:mod:`.encode`): 1-bit (two values), 4-bit (``k <= 16``) or uint8 indices plus a codebook,
  decoded in the graph (``Cast`` + ``Gather`` / ``GatherElements``), which onnxruntime folds at session start:
  inference runs the same weights, the weights take up to ~32x (1-bit), ~8x (4-bit) or ~4x (uint8) fewer bytes;
  session start pays for the decoding. Each weight takes the smallest storage counting the decoder's own bytes
  (:func:`.encode.storage`): a weight too short to gain stays snapped, and the report says which (``stored``).
  Run ``fold`` before ``cluster``, not after: folding would decode the weights back into the file; ``quantize``
  decodes them too (its ``fold_first``), so for int8 compute run ``cluster`` again after it (below).

With ``min_cosine`` and data, the choice is fidelity-driven (:mod:`.sensitivity`): the tensors whose
clustering costs the outputs the most cosine per weight are clustered with ``sensitive_k`` centroids per
tensor instead (``0``: left float), until the outputs keep ``min_cosine`` against the model before clustering.

After ``quantize``, ``cluster`` clusters the int8 / uint8 weights of the quantized graph (QDQ or onnxruntime's
integer ops, and quantized embedding tables) the same way: centroids are rounded to integers and the codebook
keeps the weight's type, so the decoder yields the same int8 tensor the quantized op reads and onnxruntime
still fuses it into QLinearConv / QGemm / DynamicQuantizeMatMul — 4-bit storage with int8 compute. A weight that
already holds at most ``k`` values (clustered before quantizing: ``cluster:encoding=snap`` then ``quantize``, whose
per-channel scales turn each tensor's centroids into at most ``k`` integers per channel) is encoded exactly, per channel
if need be.

Zeros (pruned weights) stay exactly zero, as a centroid of their own (not when binarized). The report lists, per
tensor, the number of centroids, the relative L2 reconstruction error and the unique values, which tensors were
spared and what clustering them would have cost, and (``weights_left_alone``) every other constant read as a
weight that was not clustered, and why: too small, held in a Constant node, also read as data, ...

This module holds the options, the search hint and the registration only, so loading the plugin (which the CLI
does before parsing) imports no numpy, onnx_ir or onnxruntime; the pass (:mod:`.run`) is imported when created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from onnxopt import PassOptions, PassSpec, SearchDim, SearchHint, hookimpl, option

if TYPE_CHECKING:
    from onnxopt import RunContext

    from .run import ClusterPass


@dataclass(frozen=True)
class ClusterOptions(PassOptions):
    k: int = option(16, "centroids per tensor (or per channel)", ge=2, le=256)
    per_channel: bool = option(False, "cluster each output channel separately")
    init: Literal["kmeans++", "linear", "density"] = option("kmeans++", "centroid initialisation (TF-MOT's names)")
    encoding: Literal["codebook", "snap"] = option(
        "codebook", "indices + codebook decoded in-graph, or values snapped to centroids"
    )
    min_elements: int = option(1024, "tensors with fewer values are left alone", ge=1)
    iterations: int = option(50, "at most this many k-means iterations", ge=1)
    keep_zeros: bool = option(True, "exact zeros (pruned weights) stay zero, as a centroid of their own")
    min_cosine: float = option(
        0.0, "with data: spare the most sensitive tensors until every output keeps this cosine (0: off)", ge=0, le=1
    )
    sensitive_k: int = option(
        256, "centroids per tensor for the spared tensors (0: leave them float; else at least 2)", ge=0, le=256
    )
    binarize: bool = option(False, "k=2 per channel: sign(w) x the channel's mean |w|, stored as 1-bit indices "
                                   "(k, per_channel, init, keep_zeros ignored)")  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sensitive_k == 1:
            raise ValueError("sensitive_k must be 0 or between 2 and 256")


#: What ``onnxopt auto`` tries: after ``quantize`` when a candidate has it (int8 weights in 4-bit codebooks run
#: onnxruntime's int8 kernels; a float codebook before ``quantize`` would be decoded by it).
SEARCH = SearchHint(
    (
        SearchDim("k", (4, 8, 16, 32, 64, 128, 256)),
        SearchDim("per_channel"),
        SearchDim("encoding"),
        SearchDim("min_elements", (256, 1024, 4096)),
    ),
    stage=45,
)


def _create(options: ClusterOptions, context: RunContext) -> ClusterPass:
    from .run import ClusterPass  # numpy and onnx_ir load when the pass runs, not when the plugin registers

    return ClusterPass(options, context)


@hookimpl
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    register(
        PassSpec(
            name="cluster",
            summary="k-means weight sharing: 4-bit / uint8 indices + a codebook decoded in-graph (after quantize: "
            "int8 weights in 4 bits), or snapped values",
            create=_create,
            options=ClusterOptions,
            search=SEARCH,
            needs_data=lambda options: options.min_cosine > 0,
            handles_subgraphs=True,
        )
    )
