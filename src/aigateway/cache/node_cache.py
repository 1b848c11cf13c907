"""The node's cache directory: made by the main process, shared by its workers.

It lives on tmpfs (``/dev/shm``) by default, named after the main process, and is
removed when the server stops. Directories of servers that died without cleaning up
are removed at the next start; those of live servers are never touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from aigateway.hotpath.regions import pid_alive

PREFIX = "aigateway-cache-"


def default_root() -> str:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def create(root: str | None = None) -> str:
    root = root or default_root()
    clean_stale(root)
    path = os.path.join(root, f"{PREFIX}{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    return path


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def clean_stale(root: str) -> list[str]:
    removed = []
    for name in os.listdir(root):
        pid = name.removeprefix(PREFIX)
        if name.startswith(PREFIX) and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(name)
    return removed
