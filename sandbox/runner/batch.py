"""Batch mode in the runner: the clean, build and exec steps of spec 6.4.

The host has already turned the API's "*" defaults into shell commands; an
empty string skips a step. Each step runs as `/bin/sh -c <command>` in the
work directory (see `program.run_program`: stdin is a pipe fed by "input" ops,
stdout/stderr are the pipes pid 1 drains, so the output reaches the host as
stdout/stderr events). Every event below is sent after the step's shell has exited, and pid 1
drains the pipes before it forwards a frame, so a step's output is always
ahead of its "*-finished" event.

Events:
  {"ev": "clean-finished", "exitCode": rc}   only if "clean" is not empty
  {"ev": "build-finished", "exitCode": rc}   always (rc 0 if the build is skipped)
  {"ev": "finished", "exitCode": rc}         the exec step's rc (0 if skipped), or
                                             127 without running it if the build
                                             failed (a line on stderr says so)

rc is the shell's exit status, 128 + n if signal n killed it. An interrupt
(SIGINT from pid 1 to the runner's process group, so the step's processes get
it too) usually ends the step with 130; a second one SIGKILLs the shell. The
following steps then go on by the rules above (an interrupted build counts as
failed).

Standard library only: this runs inside the kernel.
"""

from __future__ import annotations

from .channel import Channel, InterruptGate
from .program import run_program

EXIT_BUILD_FAILED = 127
STEPS = ("clean", "build", "exec")


def run_batch(channel: Channel, gate: InterruptGate, message: dict, cwd: str) -> None:
    """Run one batch op and send its events (ending with "finished")."""
    commands: dict[str, str] = {}
    for step in STEPS:
        command = message.get(step)
        if command is None:
            command = ""
        if not isinstance(command, str):
            channel.send_idle({"ev": "error", "message": f"batch: {step} must be a string"})
            return
        commands[step] = command
    if commands["clean"]:
        rc = run_program(channel, gate, commands["clean"], cwd)
        channel.send({"ev": "clean-finished", "exitCode": rc})
    rc = run_program(channel, gate, commands["build"], cwd) if commands["build"] else 0
    channel.send({"ev": "build-finished", "exitCode": rc})
    if rc != 0:
        note = f"build failed with exit code {rc}; not running the program\n"
        channel.console("stderr", note.encode())
        channel.send_idle({"ev": "finished", "exitCode": EXIT_BUILD_FAILED})
        return
    rc = run_program(channel, gate, commands["exec"], cwd) if commands["exec"] else 0
    channel.send_idle({"ev": "finished", "exitCode": rc})
