"""Engine stage: the scheduler that takes stored jobs to done or failed.

    loop.py         the Engine: its loop, scheduling, local jobs, outcomes, Ctrl-C
    remote_jobs.py  the rules for remote jobs: submit (tags looked up first), follow, settle
    remote.py       a remote job's phase (a transition table) and polling schedule; a service's pace
    calls.py        work in flight, and calls to providers in threads
"""

from .loop import SILENCE_LIMIT, Engine, NullProgress, RunOutcome

__all__ = ["SILENCE_LIMIT", "Engine", "NullProgress", "RunOutcome"]
