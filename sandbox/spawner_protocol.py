"""The version of what a server and its spawner say to each other (sandbox.spawner's
requests) and of the frames between the server and its kernels
(sandbox.runner.protocol, sandbox.kernel_events). A spawner outlives its server
when kernels are kept across restarts, so the next server may be newer: it adopts
the kernels only if their versions agree, and ends them otherwise ("server
upgraded"). Raise VERSION with any change to either; this module stays tiny, for
both the spawner and the server to import.
"""

VERSION = 1
# Kernels an "adopt" reply hands over at once: the server reads 16 fds a message.
ADOPT_BATCH = 16
