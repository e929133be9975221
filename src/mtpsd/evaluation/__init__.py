"""Evaluation stage helpers: which lm-eval tasks run and how (``tasks``), and how long
the evaluation grid takes (``plan``). The evaluation itself is ``mtpsd.evaluate``."""
