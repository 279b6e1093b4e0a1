"""Training several models side by side: one worker process per core.

:func:`archsim.models.train.train_classifier` runs on one thread (so its weights do
not depend on the machine's core count); a machine with C cores therefore trains
C models at once in about the time of one. The zoo, the students of ``distill``
and the sources of the data-overlap experiment all train this way.
"""

from __future__ import annotations

import os
import select
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from archsim.cache import CacheStore
from archsim.hardware import usable_cores

Job = tuple[Callable[..., Any], tuple]
"""``(function, args)``: a module-level function (workers import it by name) called as
``function(*args, store)`` with a :class:`CacheStore` on the caller's cache folder."""


def train_side_by_side(jobs: Sequence[Job], cache: CacheStore, desc: str, processes: int | None = None) -> bool:
    """Run ``jobs`` in worker processes (:func:`worker_context`), ``processes`` at a time (default: the usable cores).

    Each job is expected to leave what it trains in ``cache``, where the caller
    then finds it as a hit; the workers' hits, misses and used entries are added to
    ``cache``. Jobs start in the given order, so give the longest first: a long one
    started last leaves the other cores idle. A job's error is raised here.

    Returns False, doing nothing, when fewer than two workers would run (one job or
    one core): the caller trains in its own process then, without a worker's start-up.
    """
    workers = min(len(jobs), processes or usable_cores())
    if workers < 2:
        return False
    pool = ProcessPoolExecutor(
        workers, mp_context=worker_context(), initializer=worker_setup, initargs=(os.getpid(), dict(os.environ))
    )
    try:
        futures = [pool.submit(_run_job, function, args, str(cache.root)) for function, args in jobs]
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="model", disable=None):
            hits, misses, used = future.result()
            cache.hits += hits
            cache.misses += misses
            cache.used.update(used)
    finally:
        # Not waiting: after an error (or Ctrl-C) the models still training end with this process, if not before.
        pool.shutdown(wait=False, cancel_futures=True)
    return True


def worker_context() -> BaseContext:
    """Workers forked from a server process that has imported archsim (and so torch and timm) once.

    Not fork: a child forked from this process would inherit torch's thread pools in
    whatever state they are. Not spawn: each worker would import torch and timm
    itself, 7 s a worker on a 2-core VM, paid again by every pool; the server pays
    it once per process, and a later pool starts in well under a second.
    """
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload(["archsim.models.parallel"])
    return context


def worker_setup(caller: int, environment: dict[str, str]) -> None:
    # The server's environment is the one of the first pool's time; the caller's may have changed since.
    os.environ.clear()
    os.environ.update(environment)
    torch.set_num_threads(1)
    threading.Thread(target=_end_with, args=(caller,), name="archsim-end-with-caller", daemon=True).start()


def _end_with(caller: int) -> None:
    """End this worker as soon as ``caller`` ends, however it ends.

    A caller killed outright (SIGKILL: no chance to stop its pool) would leave its
    workers training unseen, and the fork server waiting for them. Linux signals
    the end of a process to a pidfd at once; elsewhere a poll every second sees it.
    """
    try:
        handle = os.pidfd_open(caller)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # not Linux 5.3+
        while _runs(caller):
            time.sleep(1)
    else:
        select.select([handle], [], [])
    os._exit(1)


def _runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _run_job(function: Callable[..., Any], args: tuple, root: str) -> tuple[int, int, set[tuple[str, str]]]:
    store = CacheStore(root)
    function(*args, store)
    return store.hits, store.misses, store.used
