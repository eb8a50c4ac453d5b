"""Adaptive optimization: search pass combinations and their options under an accuracy budget.

``onnxopt auto MODEL --data val.npz --max-drop 0.01 -o best.onnx`` samples recipes (the passes whose
SearchHint allows it, each with sampled options; on-request ones only when asked for) with optuna's TPE
sampler, builds every candidate with the ordinary pipeline (:func:`onnxopt.pipeline.optimize`) in a worker
process, judges it with the ordinary validation, and writes the best model that meets the budget, a JSON report of every
trial, a PNG of the size / accuracy frontier and the frontier as a table.

It lives in the host, not in a plugin, because it only orchestrates the host's own pipeline: it knows
passes by their registered names and options (:mod:`onnxopt.auto.space`), never imports a plugin, and uses
the session, the recipe and the pipeline, never the API above it.
Modules: ``space`` (what is searched), ``trial`` (one candidate, run in a worker), ``executors``
(process pool or Ray), ``frontier`` (Pareto set, best choice, table), ``plot`` (matplotlib),
``search`` (the optuna study: budgets, resume, outputs). optuna and matplotlib are optional extras,
imported only when a search or a plot runs.
"""
