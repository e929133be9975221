"""lm-evaluation-harness's own command line, with the `mtpsd` model and our tasks known.

lm-eval finds a model class only once its module is imported; this verb imports
``mtpsd.evaluation.lm_eval_adapter`` (registering ``--model mtpsd``) and adds our task folder to
``--include_path`` unless one is given, then hands every argument to lm-eval::

    mtpsd lm-eval run --model mtpsd \
        --model_args pretrained=results/runs/tiny/checkpoint,strategy=confadapt,k=8,tau=0.9 \
        --tasks mtpsd_synth_math --limit 20
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources


def add_arguments(p) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for lm-eval (e.g. run --model mtpsd ...)")


def lm_eval_argv(args: list[str]) -> list[str]:
    """lm-eval's argv: ours, plus --include_path of the shipped task YAMLs for `run`."""
    argv = list(args)
    if argv[:1] == ["run"] and not any(a.startswith("--include_path") for a in argv):
        argv += ["--include_path", str(resources.files("mtpsd") / "eval_tasks")]
    return argv


def run(args) -> int:
    import mtpsd.evaluation.lm_eval_adapter  # noqa: F401  (registers --model mtpsd)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *lm_eval_argv(args.args)]
    cli_evaluate()
    return 0
