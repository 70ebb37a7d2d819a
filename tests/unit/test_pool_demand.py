"""The warm pool's memory of bursts (server/engine/pool.py Demand): how many kernels
of a kind it keeps ready after kernels were given out, and when that falls. The
kernels here are stand-ins with the one thing Demand reads of a kernel: whether it
is dead (tests/api/test_pool_api.py runs the pool with real ones)."""

from __future__ import annotations

from dataclasses import dataclass

from server.engine.pool import Demand
from server.engine.settings import PoolSettings


@dataclass
class Given:
    dead: bool = False


def test_kernels_the_refill_keeps_up_with_are_bursts_of_one():
    demand = Demand(memory=100.0, most=50)
    for i in range(30):
        demand.add(1000.0 + i, Given(), at_rest=True)
    assert demand.peak(1030.0) == 1


def test_a_burst_is_the_kernels_given_out_until_the_pool_is_whole_again():
    demand = Demand(memory=100.0, most=500)
    for i in range(200):  # a class: the pool never caught up
        demand.add(1000.0 + i * 0.001, Given(), at_rest=i == 0)
    assert demand.peak(1001.0) == 200
    demand.add(1002.0, Given(), at_rest=True)  # later, one student more
    assert demand.peak(1002.0) == 200


def test_kernels_that_ended_do_not_count():
    """A client creating and destroying in a loop, or a stream of short jobs, holds
    a few kernels at once however many it made."""
    demand = Demand(memory=100.0, most=500)
    held: list[Given] = []
    for i in range(1000):
        kernel = Given()
        demand.add(1000.0 + i * 0.001, kernel, at_rest=i == 0)
        held.append(kernel)
        if len(held) > 5:
            held.pop(0).dead = True
    assert demand.peak(1001.0) == 6


def test_the_largest_burst_counts_until_it_is_too_old_then_the_next():
    demand = Demand(memory=60.0, most=500)
    for i in range(200):
        demand.add(1000.0 + i * 0.001, Given(), at_rest=i == 0)
    for i in range(20):  # a smaller group, 50 s later
        demand.add(1050.0 + i * 0.001, Given(), at_rest=i == 0)
    assert demand.peak(1055.0) == 200
    assert demand.falls_at() == 1000.0 + 0.199 + 60.0
    assert demand.peak(1061.0) == 20
    assert demand.peak(1111.0) == 0
    assert demand.falls_at() is None


def test_a_burst_counts_at_most_most():
    demand = Demand(memory=60.0, most=8)
    for i in range(100):
        demand.add(1000.0 + i * 0.001, Given(), at_rest=i == 0)
    assert demand.peak(1001.0) == 8


def test_an_expected_burst_counts_as_one_that_came():
    demand = Demand(memory=60.0, most=100)
    demand.add(1000.0, Given(), at_rest=True)
    demand.expect(1001.0, 500)  # more than most: most
    assert demand.peak(1002.0) == 100
    demand.expect(1003.0, 10)  # a smaller one does not shrink it
    assert demand.peak(1004.0) == 100
    assert demand.peak(1062.0) == 10
    assert demand.peak(1064.0) == 0


def test_how_many_a_kind_keeps():
    """PoolSettings.kept: the one rule the refill, /metrics and the server's
    open-files limit (kept(pool_max)) read."""
    assert PoolSettings(pool_size=4, pool_max=256).kept(0) == 4
    assert PoolSettings(pool_size=4, pool_max=256).kept(200) == 200
    assert PoolSettings(pool_size=4, pool_max=256).kept(1000) == 256
    assert PoolSettings(pool_size=8, pool_max=2).kept(100) == 8  # no growth
    assert PoolSettings(pool_size=0, pool_max=256).kept(100) == 0  # the pool off
