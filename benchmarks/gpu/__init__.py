"""The GPU acceptance check (issue 15): ``benchmarks/gpu_check.sh`` runs ``python -m benchmarks.gpu.check``.

- ``check``: the driver; runs each section as a subprocess under a shared deadline, then the summary.
- ``cuda_tests``: the CUDA-only pytest files, pass/fail counts into ``tests.json``.
- ``decode_arch``: one architecture with random weights: ``roofline`` then ``throughput``.
- ``roofline``: the cost of one forward pass against tokens per pass (batch x width), the ridge.
- ``throughput``: HF ``generate`` (eager, static cache compiled) vs our engine, interleaved.
- ``replay``: the ConfAdapt chunk-size distribution (or a decode JSONL's traces) replayed via ``accept_fn``.
- ``summary``: ``summary.md`` (targets of the issue: target / measured / met) from the JSON files.
- ``common``: deadlines, random-weight models, JSON merging, timing.

Nothing here is fetched from the network: models are built from the config files in
``benchmarks/arch/`` with random weights, prompts are random ids.
"""
