"""BodyGate: at most `limit` reads at once; a new one evicts the oldest."""

from __future__ import annotations

import asyncio

import pytest

from server.faces.http import BodyGate


def test_a_new_read_evicts_the_oldest_and_places_are_given_back():
    async def main() -> list[str]:
        gate = BodyGate(2)
        release = asyncio.Event()

        async def read() -> str:
            try:
                async with gate.admitted():
                    await asyncio.wait_for(release.wait(), 30)
                return "read"
            except TimeoutError:
                return "evicted"

        tasks = []
        for _ in range(3):
            tasks.append(asyncio.ensure_future(read()))
            await asyncio.sleep(0)  # each enters the gate in turn
        await asyncio.sleep(0)
        assert len(gate) == 2
        release.set()
        results = await asyncio.gather(*tasks)
        assert len(gate) == 0
        return results

    assert asyncio.run(main()) == ["evicted", "read", "read"]


def test_a_cancelled_reader_is_cancelled_not_evicted():
    async def main() -> None:
        gate = BodyGate(1)

        async def read() -> None:
            async with gate.admitted():
                await asyncio.sleep(30)

        task = asyncio.ensure_future(read())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(gate) == 0

    asyncio.run(main())


def test_the_limit_is_at_least_one():
    with pytest.raises(ValueError):
        BodyGate(0)
