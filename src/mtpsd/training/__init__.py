"""Self-distillation training: the loop, its metrics, how it is launched, and what it needs.

- ``loop``: :func:`train_mtp` (the resumable training loop)
- ``metrics``: rows of ``train_metrics.jsonl``
- ``launch``: plain process or ``accelerate launch`` (FSDP)
- ``distributed``: the accelerator (one process, DDP, FSDP2 on GPUs or CPU processes), checkpoint state dicts
- ``memory_plan``: expected peak GPU memory and disk of a run, from the model config alone
- ``optim``: the optimizer a config names (PyTorch AdamW reference, torchao 8-bit AdamW)
"""
