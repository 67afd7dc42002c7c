"""Run a function in N gloo processes: free port, barrier before teardown, join with a timeout."""
from __future__ import annotations

import io
import os
import socket
import traceback

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args, queue) -> None:
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        result = fn(rank, world, *args)
        buf = io.BytesIO()
        torch.save(result, buf)  # plain bytes: tensors sent as-is would be shared through this process's fds
        queue.put((rank, "ok", buf.getvalue()))
    except BaseException:  # noqa: BLE001 - the parent reports it
        queue.put((rank, "error", traceback.format_exc()))
    finally:
        if dist.is_initialized():
            try:
                dist.barrier()  # without it gloo teardown aborts now and then on torch 2.14
            finally:
                dist.destroy_process_group()


def launch(fn, world: int = 2, args: tuple = (), timeout: float = 120.0) -> list:
    """Run ``fn(rank, world, *args)`` in ``world`` spawned processes; returns the results by rank."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(r, world, port, fn, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    errors = []
    import queue as q
    for _ in range(world):
        try:
            rank, status, value = queue.get(timeout=timeout)
        except q.Empty:
            break
        if status == "ok":
            results[rank] = torch.load(io.BytesIO(value), weights_only=False)
        else:
            errors.append(f"rank {rank}:\n{value}")
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
            errors.append(f"pid {p.pid} did not exit in time (killed)")
    if errors or len(results) != world:
        raise AssertionError("distributed run failed:\n" + "\n".join(errors or [f"only {len(results)} of {world} ranks reported"]))
    return [results[r] for r in range(world)]
