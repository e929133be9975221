"""The ``mtpsd`` command: one subcommand per pipeline step (same verbs as the rules).

Each subcommand lives in its own module ``mtpsd.cli.<name>`` with ``add_arguments(parser)``
and ``run(args) -> int``; modules are imported only when their verb is called so
``mtpsd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from mtpsd import library_noise, numerics
from mtpsd.errors import MtpsdError

# verb -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "resolve-config": ("resolve_config", "validate config files and write one run's resolved config JSON"),
    "prepare-data": ("prepare_data", "build train/validation/test JSONL (synthetic, MetaMathQA, GSM8K)"),
    "pretrain-base": ("pretrain_base", "train the tiny tokenizer and base model from scratch"),
    "import-base": ("import_base", "load a pretrained base model (hub id, directory, GGUF) and save it"),
    "import-checkpoint": ("import_checkpoint", "import a published MTP checkpoint to evaluate without training"),
    "add-mtp-token": ("add_mtp_token", "add the <MTP> token to a base model"),
    "plan-memory": ("plan_memory", "expected peak GPU memory, checkpoint disk and GPU-hours of a run (no weights loaded)"),
    "train-mtp": ("train_mtp", "self-distillation training"),
    "decode": ("decode", "decode a prompt file with a strategy; write generations and statistics"),
    "evaluate": ("evaluate", "one checkpoint x one task x one decoding setting through lm-eval"),
    "lm-eval": ("lm_eval", "lm-evaluation-harness's CLI with --model mtpsd and our tasks registered"),
    "summarize": ("summarize", "collect evaluation JSONs into tidy CSVs"),
    "confidence-quality": ("confidence_quality", "student confidence vs teacher loss of its k-token proposal (figure 6 data)"),
    "plot": ("plot", "draw one figure"),
    "report": ("report", "assemble tables and the paper report"),
    "plan": ("plan", "expected device hours of the decoding work, from measured speed figures"),
    "doctor": ("doctor", "preflight before GPU hours: GPUs and memory plans, disk, hub token, nltk data, tasks, versions"),
    "fingerprint": ("fingerprint", "a few steps of tiny pretraining and distillation, hashed (pinned numerics check)"),
}


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtpsd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == verb:
            importlib.import_module(f"mtpsd.cli.{module}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    numerics.apply()  # before any verb imports torch (mtpsd.numerics)
    library_noise.install()  # library messages a user cannot act on (mtpsd.library_noise)
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb is not None and verb not in COMMANDS:
        verb = None
    parser = build_parser(verb)
    args = parser.parse_args(argv)
    module = importlib.import_module(f"mtpsd.cli.{COMMANDS[args.verb][0]}")
    try:
        return int(module.run(args) or 0)
    except MtpsdError as e:
        print(f"mtpsd {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk is the user's to fix, like bad input: one line, no traceback
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"mtpsd {args.verb}: error: {e.strerror} while writing {e.filename or 'a file'}: "
              "free space and run the same command again", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
