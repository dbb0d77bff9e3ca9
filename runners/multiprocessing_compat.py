"""What the worker pool needs from ``multiprocessing`` beyond its public API, in one place.

Relies on ``multiprocessing.forkserver._forkserver``, the process-wide ``ForkServer`` whose
public face is ``set_forkserver_preload``: its ``_preload_modules`` (the list that function
replaces) and ``_forkserver_pid`` (set while a fork server runs).
``tests/test_multiprocessing_compat.py`` fails, naming the Python, when they change.
"""

from __future__ import annotations

import multiprocessing.forkserver
from collections.abc import Sequence
from typing import Any


def preload_in_fork_server(modules: Sequence[str]) -> bool:
    """Have the fork server import ``modules`` when it starts, besides what it already would.

    Workers are forked from the fork server, so a module it imported is in every worker at
    no cost, where each worker would otherwise import it again (a worker imports the script
    that started it, and with it Prefect). The list is the process's: another user of the
    fork server in this process gets these imports too, and nothing else. Once a fork server
    runs its modules are fixed, and this does nothing; True if the modules will be loaded.
    """
    server: Any = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is not None:
        return all(module in server._preload_modules for module in modules)
    wanted = list(server._preload_modules)
    wanted += [module for module in modules if module not in wanted]
    multiprocessing.forkserver.set_forkserver_preload(wanted)
    return True
