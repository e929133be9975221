"""Evaluation stage: one checkpoint on one task with one decoding setting (``evaluate``,
through lm-eval with ``lm_eval_adapter``), the metrics (``metrics``), the confidence vs
quality table (``confidence_quality``), which lm-eval tasks run and how (``tasks``), and how
long the evaluation grid takes (``plan``)."""
