"""Library messages a user cannot act on, silenced at their source: one logging filter per
message on the logger that emits it (warnings in general stay on).

- ``torchao`` logs "Failed to load .../torchao/_C*.so: ..." when importing (transformers imports
  it when installed) for optional compiled kernels its wheel carries for other setups
  (``_C_mxfp8`` is built for CPython 3.10; ``_C_cutlass_90a`` needs an sm_90a GPU). mtpsd uses
  only torchao's ``AdamW8bit``, which is plain PyTorch (``mtpsd.training.optim``).
- ``torch.utils._pytree`` warns "<enum ...> is an Enum subclass ... Calling register_constant()
  on Enum subclasses is deprecated" for torchao's own enums (``torchao.utils`` registers them);
  nothing in mtpsd calls ``register_constant``.

Snakemake's "No validator found for JSON Schema version identifier" is fixed where it arises
instead: the config schema names the dialect Snakemake validates with (``mtpsd.config.schema``).
:func:`install` runs first in every ``mtpsd`` verb (``mtpsd.cli.main``).
"""

from __future__ import annotations

import logging
import re

_TORCHAO_SO = re.compile(r"^Failed to load \S*torchao[/\\]_C[^/\\]*\.so: ")
_PYTREE_ENUM = "Calling register_constant() on Enum subclasses is deprecated"


def _torchao_optional_kernel(record: logging.LogRecord) -> bool:
    return not _TORCHAO_SO.match(record.getMessage())


def _torchao_enum_registration(record: logging.LogRecord) -> bool:
    if _PYTREE_ENUM not in record.getMessage():
        return True
    cls = record.args[0] if isinstance(record.args, tuple) and record.args else None
    return not str(getattr(cls, "__module__", "")).startswith("torchao")


FILTERS = {"torchao": _torchao_optional_kernel, "torch.utils._pytree": _torchao_enum_registration}


def install() -> None:
    """Add the filters (idempotent); call before torch or torchao is imported."""
    for name, fn in FILTERS.items():
        logger = logging.getLogger(name)
        if fn not in logger.filters:
            logger.addFilter(fn)
