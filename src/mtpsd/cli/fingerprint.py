"""Compute the numerics fingerprint (``mtpsd.fingerprint``); optionally check it against a file.

Example::

    mtpsd fingerprint --out tests/fixtures/fingerprint.json      # regenerate (make fingerprint)
    mtpsd fingerprint --check tests/fixtures/fingerprint.json    # exit 1 on any difference
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--out", default=None, help="write the fingerprint JSON here")
    p.add_argument("--check", default=None, help="compare with this fingerprint JSON; exit 1 if it differs")


def run(args) -> int:
    from mtpsd.fingerprint import compute, differences
    from mtpsd.io import atomic_write_json, read_json

    fp = compute()
    if args.out:
        atomic_write_json(args.out, fp)
    print(f"pretrain {fp['pretrain_weights_sha256'][:16]}  distill {fp['distill_weights_sha256'][:16]}  "
          f"({fp['setting']['numerics']['mode']} numerics, {fp['setting']['threads']} threads)")
    if args.check:
        diff = differences(read_json(args.check), fp)
        for line in diff:
            print(f"differs: {line}")
        return 1 if diff else 0
    return 0
