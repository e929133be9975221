"""The one seam between the decoding engine and CUDA graphs: capture a pass, replay it.

The engine (``mtpsd.decoding.engine``) never touches ``torch.cuda.CUDAGraph`` itself. A
backend has three methods: ``capture(fn, inputs)``, ``replay(captured)`` and ``release()``
(the engine dropped every graph). The engine hands it a pass function and the pass's *static inputs* (device tensors the pass
reads; the engine copies each new pass's values into them before a replay) and gets back
a :class:`Captured`, which it replays. Everything a captured pass reads besides its static
inputs (KV buffers, weights, the banned-id bias, the threshold) must keep its address for
as long as the graph lives: the engine allocates them before the first capture and drops
every graph when it reallocates.

Backends:

- :class:`CudaGraphs`: ``torch.cuda.CUDAGraph`` s sharing one memory pool. Graphs replay one
  at a time and the engine reads a graph's output right after its replay, so the outputs may
  share memory. ``pool_bytes`` is the device memory the captures reserved (measured).
- the test suite's CPU emulator (``tests/graph_emulator.py``) implements the same two
  methods and checks, on every replay, what a real replay would silently get wrong: host
  synchronisation or data-dependent ops inside the pass, inputs that moved, outputs read
  after another graph replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Captured:
    """One captured pass: its static inputs and the output tensor each replay overwrites."""

    fn: Callable[..., torch.Tensor]
    inputs: tuple[torch.Tensor, ...]
    out: torch.Tensor
    graph: object = None  # torch.cuda.CUDAGraph (CudaGraphs); the emulator keeps its own records
    record: object = None


class CudaGraphs:
    """Capture on a side stream after two warm-up runs (the warm-ups compute the very pass:
    the engine's cache writes are idempotent), replay on the current stream."""

    name = "cuda"

    def __init__(self, device: torch.device):
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        self.device = device
        self.pool = None
        self.pool_bytes = 0  # memory_reserved growth over all captures (the shared pool)

    def capture(self, fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> Captured:
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                fn(*inputs)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        before = torch.cuda.memory_reserved(self.device)  # after the warm-ups: only the pool's growth counts
        with torch.cuda.graph(graph, pool=self.pool):
            out = fn(*inputs)
        self.pool_bytes += max(torch.cuda.memory_reserved(self.device) - before, 0)
        return Captured(fn, inputs, out, graph=graph)

    def replay(self, g: Captured) -> torch.Tensor:
        g.graph.replay()
        return g.out

    def release(self) -> None:
        """Forget the pool (the engine drops its graphs first)."""
        self.pool = None
        self.pool_bytes = 0
