"""Engine stage: the scheduler that takes stored jobs to done or failed.

    loop.py    the Engine: its loop, local jobs, and the rules for remote jobs
    remote.py  a remote job's phase (a transition table), its polling schedule; a service's pace
    calls.py   calls to providers, in threads: a submission with its lookups first
"""

from .loop import SILENCE_LIMIT, Engine, NullProgress, RunOutcome

__all__ = ["SILENCE_LIMIT", "Engine", "NullProgress", "RunOutcome"]
