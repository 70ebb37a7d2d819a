"""Many kernels at once on one server. Not cgroup-specific, so not run again in the
none layout or the (emulated, small) cgroup v2 guest: a thousand kernels there
would take minutes."""

from __future__ import annotations

import concurrent.futures
import os

from helpers.api_server import spawner_pid, start_server, stop_server
from helpers.harness import alive, wait_until
from helpers.kernel_remains import KernelRemains


def _stdout(results: list[dict]) -> str:
    return "".join(text for r in results for kind, text in r["console"] if kind == "stdout")


MANY = 1100  # kept kernels: the spawner then holds more fds than select(2) can watch


def test_a_spawner_keeping_over_a_thousand_kernels_serves_on(tmp_path):
    """A kept kernel costs the spawner an fd (its copy of the host's socket), so past
    about a thousand kernels its new fds are above select's FD_SETSIZE (1024): the
    spawner once died there, with every kernel. It must go on starting, serving
    and ending kernels, and leave nothing when the server stops."""
    data = str(tmp_path / "data")
    proc, server = start_server(data, config=f"max_kernels = {MANY + 50}\npool_size = 2\n")
    try:
        client = server.client(**server.new_key(concurrency=MANY + 10, rate_limit=100_000))

        def create(n: int) -> str:
            r = client.create(token=f"many-{n}")
            assert r.status_code == 201, r.text
            return r.json()["kernelId"]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            kernels = list(pool.map(create, range(MANY)))
        spawner = spawner_pid(proc.pid)
        assert len(os.listdir(f"/proc/{spawner}/fd")) > MANY  # past FD_SETSIZE
        assert _stdout(client.run(kernels[0], "print(6 * 7)")) == "42\n"
        assert _stdout(client.run(kernels[-1], "print(6 * 7)")) == "42\n"
        for kernel_id in kernels[:20]:  # destroys, answered as their kernels die
            assert client.request("DELETE", f"/v2/kernel/{kernel_id}").status_code == 204
        last = create(MANY)
        assert _stdout(client.run(last, "print('still serving')")) == "still serving\n"
        assert alive(spawner)
        remains = [KernelRemains(server, k) for k in (kernels[-1], last)]
    finally:
        # the server ends its 1,100 kernels on the way out: 16-20 s here, and past 20
        # in a loaded full run, when the harness's kill left them kept for a restart
        stop_server(proc, timeout=120)
    wait_until(lambda: not alive(spawner), "the spawner to end", timeout=60)
    for kernel in remains:
        kernel.assert_gone()
    assert not os.path.exists(os.path.join(data, "spawner.sock"))
