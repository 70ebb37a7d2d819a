"""The project's published benchmark: the HTTP API against a real server, beside baselines.

Method. The script makes a temporary data directory, creates an API keypair in
it with `sandbox-admin` (concurrency and rate limit high enough never to
refuse), writes a config raising `max_kernels` (to 2000, or above --density), and starts the server
as users do, `python -m server`, on a free loopback port. Every server figure is
measured from the client's side over HTTP: requests signed as the v2 face
(server/faces/v2/signing.py) verifies them (Sorna v2 headers) on keep-alive connections, timed with
perf_counter from before the request to the end of the response, and their output
checked. The client shares the machine's cores with the server, as the baselines
do, so it is kept lean to weigh on the figures as little as it can: a minimal
HTTP/1.1 client on asyncio streams (the whole request in one write; only the status
code and the Content-Length body read back), and a Date of whole seconds, so a
request repeated within a second reuses its signed headers instead of signing
anew. At the end the server gets SIGTERM (it destroys what is left) and the
directory is removed, also after an error, Ctrl-C or SIGTERM.

Every figure names a baseline measured in the same run and is printed as a
multiple of it (of its median), because absolute numbers from a noisy 2-core
box mean little on their own. Times are wall-clock milliseconds; memory is MiB.
A last note says how busy the rest of the host kept the CPUs during the run.

  baselines
    python3 -c pass               bare interpreter start: what any fork+exec sandbox pays
    bwrap python3 -c pass         the same in bubblewrap with comparable isolation
    gcc hello.c && ./main         the batch figure's build and run, bare on the host
    signed no-op                  POST /v2/authorize: HTTP, signing and the server's
                                  request wrapper, no kernel
    idle python3 USS, PSS         bare interpreters idling at once
    server, spawner RSS at start  before the first kernel
  server figures
    create (warm pool)            POST /v2/kernel/create (python3), until its 201, each
                                  once the warm pool is full again (untimed wait)
    create until print(1)         the same, then the first query until "finished"
    create (no pool)              the same two on a second server with pool_size = 0:
                                  every create starts a kernel, from one of the
                                  spawner's spare processes (already in a cgroup);
                                  each after an untimed 50 ms pause (a create on a
                                  server not busy creating), and then back to back
    create (no pool, no spares)   spaced so on a third with spare_processes = 0 as
                                  well: every create forks and moves a process
    query print(1)                one query round trip in a ready kernel
    stream execute print(1)       the same run over an open WebSocket execute stream
                                  (`websockets`' client): the run message out, the
                                  messages in up to "finished"
    import numpy, pandas, ...     `import numpy, pandas, matplotlib.pyplot` timed inside
                                  fresh kernels (beside the host's python3), and those
                                  kernels' unique memory after it (beside before it)
    terminal keystroke echo       one key typed into bash over the terminal stream until
                                  its echo comes back, beside a WebSocket ping round
                                  trip on the same socket
    no-op | query, C concurrent   C clients (own connection, own kernel) back to back
                                  for a fixed time: latency, requests/s, and the CPU
                                  time per request of the server, the spawner with
                                  its kernels, and this client
    batch C                       create a c kernel, upload main.c, batch build "*" and
                                  exec "*" (until "finished"), destroy; and the
                                  build+exec call alone
    density N                     N idle python3 kernels alive: USS and PSS of each
                                  kernel (summed over its processes, the spawner's
                                  descendants), server and spawner RSS, and create
                                  and query latency at that density

  the peer (--peers only)
    kernelgateway: ...            Jupyter Kernel Gateway 3.0.1 from a virtualenv of its
                                  own (.bench/peers/), measured the same way: kernel
                                  start until print(1), print(1) round trips over its
                                  channels WebSocket (plain and tuned client), 8 and 32
                                  clients, USS per idle kernel; each beside our figure,
                                  and how many times better ours is (kernel_gateway.py,
                                  peers.py)

Run: ./scripts/bench [--quick] [--json] [--runs N] [--density N] [--peers]
"""
