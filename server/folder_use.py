"""Folders in use: their loop devices held while kernels start with them or folder
operations run, and let go of once no live kernel mounts them.

A kernel start holds the devices of the folders it mounts until the kernel is in
the registry; from then on the registry's `mounting` keeps them. A sweeper on the
event loop (where the registry's view cannot change under it) lets go of devices
that nothing holds and no live kernel mounts; a device detaches itself once its
last mount is gone, so after a folder's last user neither a mount nor a loop
device is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.datastructures import State

from sandbox.folder_images import LoopDevice

from .errors import Problem
from .folders import Folder

SWEEP_SECONDS = 0.5


@contextlib.asynccontextmanager
async def holding(state: State, folders: Sequence[Folder]) -> AsyncIterator[dict[str, str]]:
    """{folder id: what a kernel mounts for it} while the block runs."""
    store = state.folders
    sources: dict[str, str] = {}
    try:
        for folder in folders:
            try:
                sources[folder.id] = await asyncio.to_thread(store.acquire, folder)
            except OSError as e:  # its image went missing, no loop device is free, ...
                raise Problem("kernel-creation-failed", f"folder {folder.name!r}: {e}") from e
        yield sources
    finally:
        for folder in folders:
            if folder.id in sources:
                store.release(folder)
        if getattr(state, "folder_sweeper", None) is None:
            state.folder_sweeper = asyncio.create_task(_sweep(state))


async def _sweep(state: State) -> None:
    """Let go of idle devices until none is held."""
    try:
        while state.folders.attached():
            await asyncio.sleep(SWEEP_SECONDS)
            await let_go(state)
    finally:
        state.folder_sweeper = None


async def let_go(state: State) -> None:
    """Close the devices of folders that nothing holds and no live kernel mounts."""
    store, registry = state.folders, state.registry
    mounted = {folder_id for folder_id in store.attached() if registry.mounting(folder_id)}
    idle = store.release_idle(mounted)
    if idle:
        await asyncio.to_thread(_close, idle)


def _close(devices: list[LoopDevice]) -> None:
    for device in devices:
        device.close()
