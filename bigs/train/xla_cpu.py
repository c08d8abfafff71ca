"""Several XLA:CPU devices with working collectives (torch-xla 2.9): the TPU code path, run on the CPU.

    configure(n)       # in the launching process, before torch_xla.launch
    install()          # in every device thread, before its first XLA op (idempotent)

How torch-xla runs CPU devices: torch_xla.launch starts ONE process and in it one thread per device
(torch_xla/_internal/pjrt.py: run_multiprocess uses one process for CPU, _run_thread_per_device);
xr.world_size() is the device count and xr.global_ordinal() the thread's device, as on a TPU host.

Why its collectives hang there: every thread compiles its own copy of a graph, and XLA:CPU matches
the participants of a collective by (launch id, the op's channel id — or, without one, its module's
unique id). torch-xla emits all-reduces without a channel id (csrc/cross_replica_reduces.cpp), so each
thread waits in a rendezvous of its own: "Expected 2 threads to join the rendezvous, but only 1
arrived", then an abort. torch-xla's own CPU tests run one device (test/run_tests.sh: "run these tests
with multiple CPU devices, this fails") and skip their multi-CPU all-reduce test
(test/pjrt/test_runtime_multi_cpu.py); pytorch/xla#5005 ("we didn't support cc ops on XLA:CPU"), #9089.
xm.rendezvous is built on an all-gather whose graph differs per ordinal: it cannot meet either.

What install() does, only where PJRT_DEVICE=CPU has several devices (a TPU keeps torch-xla's own):
  - xm.all_reduce -> an all-gather WITH a channel id (the same on every device, unique within a graph,
    restarted at every sync so a step's graph is the same from step to step: no recompiles), then the
    reduction over the gathered axis. xm.reduce_gradients, xm.optimizer_step and mesh_reduce use it.
  - xm.rendezvous -> a barrier among the device threads that exchanges the payloads.
Cost: an all-gather moves N× an all-reduce's bytes — fine for tests and small CPU runs.
configure(): torch-xla's execution pool and XLA:CPU's must hold all N device threads at once while
they wait in a collective (both default to the core count: with more devices than cores the last
never runs): XLA_THREAD_POOL_SIZE >= 2N, and the synchronous CPU client (PJRT_CPU_ASYNC_CLIENT=false).
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_local = threading.local()  # this device thread's next channel id
_state = {"installed": False, "barrier": None, "slots": {}, "failed": None}


def cpu_devices() -> int:
    """Devices of the XLA:CPU back-end this process will have (0 when it is not the back-end)."""
    if os.environ.get("PJRT_DEVICE", "").upper() != "CPU":
        return 0
    return int(os.environ.get("CPU_NUM_DEVICES", "1") or 1)


def configure(n: int) -> None:
    """Before torch_xla.launch: pools that hold n device threads blocked in a collective."""
    os.environ["PJRT_CPU_ASYNC_CLIENT"] = "false"
    os.environ["XLA_THREAD_POOL_SIZE"] = str(max(2 * n, os.cpu_count() or 1))


def fail(exc: BaseException) -> None:
    """A device thread failed: the others stop waiting for it at the next rendezvous and raise the same
    error (else they would wait there forever, and the launcher with them)."""
    with _lock:
        _state["failed"] = _state["failed"] or exc
        if _state["barrier"] is not None:
            _state["barrier"].abort()


def install() -> None:
    """Channel-id collectives and a thread rendezvous, for several XLA:CPU devices (see the module doc)."""
    import torch
    import torch_xla
    import torch_xla.core.xla_model as xm
    import torch_xla.runtime as xr

    with _lock:
        if _state["installed"] or cpu_devices() < 2:
            return
        _state["installed"] = True
        sync, world = torch_xla.sync, xr.world_size()

        def next_channel() -> int:
            _local.channel = getattr(_local, "channel", 0) + 1
            return _local.channel

        def synced(wait=False, reset_scope=True):
            _local.channel = 0  # a new graph: channel ids start again, the same in every thread
            return sync(wait=wait, reset_scope=reset_scope)

        def gather_reduce(t, reduce_type, scale):
            g = torch_xla._XLAC._xla_all_gather(  # (N, *t.shape): pin_layout off, a channel id, global ids
                t.unsqueeze(0), 0, world, [list(range(world))], False, next_channel(), True
            )
            ops = {xm.REDUCE_SUM: g.sum, xm.REDUCE_MAX: g.amax, xm.REDUCE_MIN: g.amin, xm.REDUCE_MUL: g.prod}
            if reduce_type not in ops:
                raise NotImplementedError(f"all_reduce {reduce_type!r} on several XLA:CPU devices")
            r = ops[reduce_type](0)
            return r * scale if scale != 1.0 else r

        def all_reduce(reduce_type, inputs, scale=1.0, groups=None, pin_layout=True):
            if groups:
                raise NotImplementedError("replica groups on several XLA:CPU devices")
            if isinstance(inputs, torch.Tensor):
                return gather_reduce(inputs, reduce_type, scale)
            by_dtype = {}
            for t in inputs:
                by_dtype.setdefault(t.dtype, []).append(t)
            with torch.no_grad():  # in place, as torch-xla's op (gradients of leaf parameters)
                for group in by_dtype.values():  # one collective per dtype
                    flat = gather_reduce(torch.cat([t.reshape(-1) for t in group]), reduce_type, scale)
                    offset = 0
                    for t in group:
                        t.copy_(flat[offset : offset + t.numel()].view_as(t))
                        offset += t.numel()
            return inputs

        def rendezvous(tag, payload=b"", replicas=[]):  # noqa: B006 — torch-xla's signature
            with _lock:
                if _state["barrier"] is None:
                    _state["barrier"] = threading.Barrier(world)
                if _state["failed"] is not None:
                    raise _state["failed"]
            torch_xla.sync()
            _state["slots"][xr.global_ordinal()] = payload
            try:
                _state["barrier"].wait()
                out = [_state["slots"][i] for i in range(world)]
                _state["barrier"].wait()  # everyone read before the next rendezvous overwrites
            except threading.BrokenBarrierError:
                raise _state["failed"] or RuntimeError("another XLA:CPU device thread failed") from None
            return out

        torch_xla.sync, xm.all_reduce, xm.rendezvous = synced, all_reduce, rendezvous
