"""Counting host synchronisations of a training step, on any device.

A host synchronisation is a point where the host has to wait until the device has run all
the work queued so far, because it needs something the device computes: while it waits,
no further kernels are queued, so the device idles once the queue drains. With the tensors on
a CUDA device, these are the calls that:

1. read values back: ``Tensor.item()``, ``float()``/``int()``/``bool()`` of a tensor, ``.tolist()``,
   ``.numpy()``, ``.cpu()``/``.to("cpu")`` (``aten._local_scalar_dense`` and device-to-host
   copies; ``aten.equal``, which returns a Python bool);
2. run an operator whose output *size* depends on the values (the host must know it to
   allocate): ``nonzero``, ``masked_select``, indexing with a boolean mask (``aten.index`` /
   ``index_put_`` with a bool index), ``unique``, ``bincount``, ``repeat_interleave`` without an
   output size;
3. copy host memory to the device without ``non_blocking`` from pinned memory (a blocking
   ``cudaMemcpy`` waits for the stream).

:class:`HostSyncCounter` counts the calls of kinds 1 and 2 made while it is active, whatever
the device, with a ``TorchFunctionMode`` (Python-level reads such as ``tolist``, which reach no
operator) and a ``TorchDispatchMode`` (operators, also those called inside library code such as
transformers and the optimizer). On CPU it therefore counts what *would* synchronise if the same
tensors were on a GPU: run it around code whose tensors all live on the training device (the
device part of a step: not the host-side layout building). Tensors that stay on the host by
design even on a GPU are not synchronisations: PyTorch optimizers keep their ``step`` counters
on the CPU (pass the optimizers as ``optimizers``), other ones can be passed as ``host_tensors``.
A device-agnostic ``.to(x.device)`` is not counted (on CPU it cannot be told from a no-op); an
explicit ``.to("cpu")`` is. Kind 3 is a property of how copies are made
(``PackedLayout.to`` copies from pinned memory without blocking); on CUDA, :func:`cuda_sync_warnings`
counts every kind with ``torch.cuda.set_sync_debug_mode``.
"""

from __future__ import annotations

import contextlib
import traceback
import warnings

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# Python-level tensor methods that hand values to the host
_READ_METHODS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"}
# operators whose output size depends on the values, or that return a host value
_VALUE_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::unique_consecutive",
              "aten::_unique", "aten::_unique2", "aten::unique_dim", "aten::bincount", "aten::equal",
              "aten::nonzero_static"}


def _is_bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


class _Functions(TorchFunctionMode):
    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _READ_METHODS and args and isinstance(args[0], torch.Tensor):
            self.counter._hit(f"Tensor.{name}", args[0])
            with self.counter._quiet():  # the operator it runs is the same synchronisation
                return func(*args, **kwargs)
        if name == "to" and args and isinstance(args[0], torch.Tensor):
            target = kwargs.get("device") or next((a for a in args[1:] if isinstance(a, str)), None)
            if isinstance(target, str) and target.startswith("cpu"):
                self.counter._hit("Tensor.to(cpu)", args[0])
                with self.counter._quiet():
                    return func(*args, **kwargs)
        return func(*args, **kwargs)


class _Operators(TorchDispatchMode):
    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name in _VALUE_OPS:
            self.counter._hit(name, args[0] if args and isinstance(args[0], torch.Tensor) else None)
        elif name == "aten::repeat_interleave" and kwargs.get("output_size") is None:
            self.counter._hit(name, args[0] if args else None)
        elif name in ("aten::index", "aten::index_put", "aten::index_put_") and _is_bool_index(args[1]):
            self.counter._hit(f"{name} (bool mask)", args[0])
        return func(*args, **kwargs)


class HostSyncCounter:
    """Context manager: ``with HostSyncCounter() as c: ...`` then ``c.count`` and ``c.calls``.

    ``host_tensors``: tensors that live on the host even in a GPU run (reading them is not a
    synchronisation); ``optimizers``: their ``step`` state tensors are such tensors (PyTorch keeps
    them on the CPU unless ``capturable``); ``stacks=True`` keeps a short stack per call (to find
    where they come from).
    """

    def __init__(self, host_tensors=(), *, optimizers=(), stacks: bool = False):
        self.host = {id(t) for t in host_tensors}
        self.optimizers = [getattr(o, "optimizer", o) for o in optimizers]  # accelerate wraps them
        self.stacks = stacks
        self.calls: list[tuple[str, str]] = []  # (what, where)
        self._muted = 0

    @property
    def count(self) -> int:
        return len(self.calls)

    def ignore(self, tensors) -> None:
        """Treat ``tensors`` as host tensors from now on."""
        self.host |= {id(t) for t in tensors}

    @contextlib.contextmanager
    def _quiet(self):
        self._muted += 1
        try:
            yield
        finally:
            self._muted -= 1

    @contextlib.contextmanager
    def paused(self):
        """Host-side work inside the counted region (e.g. building the next layouts)."""
        with self._quiet():
            yield

    def _on_host(self, tensor) -> bool:
        if tensor is None:
            return False
        if id(tensor) in self.host:
            return True
        return any(st.get("step") is tensor for opt in self.optimizers for st in opt.state.values())

    def _hit(self, what: str, tensor) -> None:
        if self._muted or self._on_host(tensor):
            return
        where = ""
        if self.stacks:
            frames = [f for f in traceback.extract_stack()[:-3] if "mtpsd/training/host_sync.py" not in f.filename]
            where = " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in frames[-4:][::-1])
        self.calls.append((what, where))

    def __enter__(self):
        self._modes = [_Functions(self), _Operators(self)]
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc):
        for m in reversed(self._modes):
            m.__exit__(*exc)
        return False


@contextlib.contextmanager
def cuda_sync_warnings():
    """On CUDA: yields a list that receives one entry per synchronising CUDA call made inside
    (``torch.cuda.set_sync_debug_mode("warn")``: blocking copies, ``item``, ``nonzero``...)."""
    found: list[str] = []
    old = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode(old)
    found.extend(str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower())
