"""Where sweep points run: in-process, a local process pool, or a Dask distributed cluster.

:func:`execute` yields ``(task, result)`` pairs in completion order, so the caller can store
each result as soon as it exists. ``fn`` must be a module-level function (it is pickled by
reference); on a remote Dask cluster fluidserve must be installed on the workers.

* ``local`` with ``workers=1``: serial, in this process.
* ``local``: a :class:`~concurrent.futures.ProcessPoolExecutor` (fork; forkserver once JAX is
  loaded in the parent); workers exit by themselves if the parent dies.
* ``dask``: ``distributed.Client(address)``; without an address a ``LocalCluster`` of
  ``workers`` single-threaded worker processes is started and closed afterwards.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from fluidserve.errors import InputError, require

EXECUTORS = ("local", "dask")


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def _bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="pt", disable=not progress, file=sys.stderr, mininterval=0.5)


def _exit_with_parent(parent_pid: int) -> None:
    """Pool-worker initializer: the worker dies with its parent (the kernel's parent-death signal
    on Linux, see :mod:`fluidserve.sweep.lifeline`; elsewhere a daemon thread that watches it)."""
    from fluidserve.sweep.lifeline import die_with_parent

    die_with_parent()
    initial_ppid = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # pragma: no cover - pid reused by another user's process
                os._exit(1)
            if os.getppid() != initial_ppid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _serial(fn, tasks, bar) -> Iterator[tuple[Any, Any]]:
    for task in tasks:
        result = fn(task)
        bar.update()
        yield task, result


def _local_pool(fn, tasks, workers: int, bar) -> Iterator[tuple[Any, Any]]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # fork is fast and needs no `if __name__ == "__main__"` guard in scripts; once JAX (threads,
    # not fork-safe) is loaded in this process, workers are forked from a clean forkserver instead
    if "jax" in sys.modules:
        ctx = mp.get_context("forkserver")
        # the forkserver imports the lifeline first: it then dies with this process (even on kill -9)
        os.environ["FLUIDSERVE_FORKSERVER_LIFELINE"] = "1"
        ctx.set_forkserver_preload(["fluidserve.sweep.lifeline", fn.__module__])
    else:
        ctx = mp.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_exit_with_parent,
                               initargs=(os.getpid(),))
    try:
        # keep a bounded number of tasks in flight so results stream back in order of finishing
        pending: dict = {}
        it = iter(tasks)
        limit = 4 * workers
        exhausted = False
        while True:
            while not exhausted and len(pending) < limit:
                try:
                    task = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending[pool.submit(fn, task)] = task
            if not pending:
                break
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                task = pending.pop(fut)
                bar.update()
                yield task, fut.result()
    finally:
        # on Ctrl-C or an error: drop queued tasks, let running ones end (their results are lost)
        pool.shutdown(wait=True, cancel_futures=True)


def _dask(fn, tasks, workers: int, address: str | None, bar) -> Iterator[tuple[Any, Any]]:
    distributed = require("distributed", "dask")
    cluster = None
    if address:
        try:
            client = distributed.Client(address, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"--address {address}: cannot connect to the Dask scheduler ({exc})") from None
    else:
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        client = distributed.Client(cluster)
    try:
        tasks = list(tasks)
        futures = client.map(fn, tasks, pure=False)
        index = {f.key: t for f, t in zip(futures, tasks)}
        for fut, result in distributed.as_completed(futures, with_results=True):
            bar.update()
            yield index[fut.key], result
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def check_args(executor: str, workers: int | None, address: str | None) -> None:
    """InputError for executor flags that cannot work (called before anything runs)."""
    if executor not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if address and executor != "dask":
        raise InputError("--address is only used with --executor dask")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")


def execute(fn: Callable[[Any], Any], tasks: Iterable[Any], executor: str = "local", workers: int | None = None,
            address: str | None = None, progress: bool = True, desc: str = "sweep") -> Iterator[tuple[Any, Any]]:
    """Run ``fn`` on every task; yield ``(task, fn(task))`` as each finishes.

    Args:
        executor: "local" (process pool; serial when workers == 1) or "dask".
        workers: pool size / LocalCluster workers (default: CPU count; Dask default 2).
        address: Dask scheduler address (``tcp://host:8786``); only with ``executor="dask"``.
        progress: tqdm bar on stderr.
    """
    check_args(executor, workers, address)
    tasks = list(tasks)
    bar = _bar(len(tasks), desc, progress)
    try:
        if executor == "dask":
            yield from _dask(fn, tasks, workers or 2, address, bar)
        else:
            n = min(workers or default_workers(), max(1, len(tasks)))
            if n == 1:
                yield from _serial(fn, tasks, bar)
            else:
                yield from _local_pool(fn, tasks, n, bar)
    finally:
        bar.close()
