"""A CPU stand-in for ``mtpsd.decoding.graphs.CudaGraphs`` that checks what a real CUDA graph
replay would get silently wrong (the engine's graph logic is proven on CPU with it).

At capture, the pass runs on its static inputs under :class:`NoHostSync`, a dispatch mode
that rejects host synchronisation and data-dependent ops (a captured graph cannot run
them), and every tensor the pass reads that it did not create is recorded by storage
address (KV buffers, weights, bias, threshold, static inputs). At replay:

- the recorded addresses must be what the pass reads now (a graph replays the addresses
  baked in at capture: a buffer reallocated after capture would be stale);
- every other captured graph's output is overwritten with garbage (graphs share one memory
  pool, so a replay may clobber them: the engine must read an output before the next replay);
- the pass runs again reading only its static inputs, and its result is copied into the
  output tensor the capture returned (a replay overwrites the same memory every time).

An input the engine forgot to copy into the static buffers, or a host read inside the pass,
therefore shows up as wrong tokens or an error in the engine tests.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mtpsd.decoding.graphs import Captured

aten = torch.ops.aten
# ops a CUDA graph cannot capture: host reads of device values, outputs whose size depends on data
FORBIDDEN = {
    aten._local_scalar_dense.default: "a host read of a device value (.item(), bool(), int(), .tolist())",
    aten.nonzero.default: "nonzero (output size depends on data)",
    aten.masked_select.default: "masked_select (output size depends on data)",
    aten.lift_fresh.default: "a tensor built from Python data inside the pass (a host-to-device copy)",
    aten.lift_fresh_copy.default: "a tensor built from Python data inside the pass (a host-to-device copy)",
    aten._unique2.default: "unique (output size depends on data)",
    aten.unique_consecutive.default: "unique_consecutive (output size depends on data)",
}


class HostSyncError(RuntimeError):
    pass


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _tensors(obj):
    """The tensors in an op's arguments or outputs (nested lists, tuples, dicts)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x)


class NoHostSync(TorchDispatchMode):
    """Rejects ``FORBIDDEN`` ops (and boolean-mask indexing); records the storages the pass
    reads before creating them (``external``: storage address -> nbytes)."""

    def __init__(self):
        super().__init__()
        self.created: set[int] = set()
        self.created_bytes = 0  # every storage the pass allocates, none reused: a bound of its pool need
        self.external: dict[int, int] = {}  # storage address -> storage nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FORBIDDEN:
            raise HostSyncError(f"{func}: {FORBIDDEN[func]} inside a captured pass")
        if func is aten.index.Tensor and any(i is not None and i.dtype == torch.bool for i in args[1]):
            raise HostSyncError("boolean-mask indexing (output size depends on data) inside a captured pass")
        if func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            raise HostSyncError("repeat_interleave without output_size inside a captured pass")
        for t in _tensors((args, kwargs)):
            addr = _storage(t)
            if addr and addr not in self.created:
                self.external.setdefault(addr, t.untyped_storage().nbytes())
        out = func(*args, **kwargs)
        for t in _tensors(out):
            addr = _storage(t)
            if addr not in self.external and addr not in self.created:
                self.created.add(addr)
                self.created_bytes += t.untyped_storage().nbytes()
        return out


class EmulatedGraphs:
    """The capture/replay interface of ``CudaGraphs``, on CPU, with the checks above."""

    name = "emulated"

    def __init__(self):
        self.graphs: list[Captured] = []
        self.captures = 0
        self.replays = 0
        self.peak_pass_bytes = 0  # largest sum of tensors created by one pass (a pool-size bound)

    def _run(self, fn, inputs):
        mode = NoHostSync()
        with mode:
            out = fn(*inputs)
        return out, mode

    def capture(self, fn, inputs: tuple[torch.Tensor, ...]) -> Captured:
        out, mode = self._run(fn, inputs)
        self.peak_pass_bytes = max(self.peak_pass_bytes, mode.created_bytes)
        missing = [i for i, x in enumerate(inputs) if _storage(x) not in mode.external and x.numel()]
        if missing:
            raise HostSyncError(f"static inputs {missing} are never read by the pass")
        self.captures += 1
        g = Captured(fn, inputs, out, record=dict(mode.external))
        self.graphs.append(g)
        return g

    def replay(self, g: Captured) -> torch.Tensor:
        if g not in self.graphs:
            raise HostSyncError("replay of a graph this backend no longer holds (released)")
        for other in self.graphs:  # the shared pool: other graphs' outputs do not survive this replay
            if other is not g:
                other.out.fill_(-(2 ** 31) if not other.out.is_floating_point() else float("nan"))
        new, mode = self._run(g.fn, g.inputs)
        moved = {a: n for a, n in mode.external.items() if a not in g.record}
        if moved:
            raise HostSyncError(f"the pass now reads {len(moved)} tensor(s) it did not read at capture "
                                f"({sum(moved.values())} bytes): a buffer was reallocated after capture")
        self.replays += 1
        g.out.copy_(new)
        return g.out

    def release(self) -> None:
        self.graphs = []
