"""The Jobe face: Jobe's REST API (trampgeek/jobe), which Moodle's CodeRunner
calls for every student answer, served by this server's engine.

Each run gets a kernel of its own, never used before and destroyed after
(server/engine/jobs.py); the run's steps are Jobe's compile and run commands
under Jobe's limits (languages.py, run.py); its outcome is read as Jobe reads
it (outcomes.py). Off unless enabled (`[faces] enabled`, `--enable jobe`).
"""

from .endpoints import PREFIXES, JobeFace, routes

__all__ = ["PREFIXES", "JobeFace", "routes"]
