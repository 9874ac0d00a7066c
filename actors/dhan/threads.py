"""Stopping a thread that runs an asyncio loop (the SDK's websockets), from another thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["cancel_until_stopped"]


def cancel_until_stopped(thread: threading.Thread | None,
                         loop_and_task: Callable[[], tuple[asyncio.AbstractEventLoop | None, Any]],
                         timeout: float) -> bool:
    """Cancel the thread's main task until the thread ends or `timeout` passes; True if it ended.

    The cancel is sent again every round: on Python 3.11 a cancel landing just as an inner await completes
    can be absorbed (asyncio.wait_for), and the thread would otherwise run on until its own timeout.
    """
    deadline = time.monotonic() + timeout
    while thread is not None and thread.is_alive():
        loop, task = loop_and_task()
        if loop is not None and task is not None and not task.done():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the loop already closed: the thread is ending by itself
        thread.join(min(0.1, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            break
    return thread is None or not thread.is_alive()
