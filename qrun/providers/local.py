"""Running a local provider's job inside a worker process, with its retries."""

from __future__ import annotations

from qrun.providers import adapter_for
from qrun.providers.base import TransientBackendError
from qrun.providers.faults import NO_FAULTS, Faults

# A local run that fails transiently (a worker's simulator busy or crashed, an injected
# fault) is tried again inside its attempt, this many times in all, with jittered backoff.
LOCAL_TRIES = 5
LOCAL_BACKOFF = (0.05, 2.0)  # first wait's scale and longest wait, in seconds


def run_local_job(provider_id: str, device: str, options: dict, seed, tasks: list,
                  faults: Faults = NO_FAULTS) -> tuple:
    """Run one job's tasks in this (worker) process: (counts per task, backend metadata).

    The metadata says how many tries the run took when it took more than one.
    """
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

    adapter = adapter_for(provider_id, device, options)
    retrying = Retrying(retry=retry_if_exception_type(TransientBackendError),
                        stop=stop_after_attempt(LOCAL_TRIES), reraise=True,
                        wait=wait_random_exponential(multiplier=LOCAL_BACKOFF[0], max=LOCAL_BACKOFF[1]))
    for attempt in retrying:
        with attempt:
            faults.before_run()
            outcomes = adapter.run(tasks, seed)
    metadata = adapter.metadata()
    tries = attempt.retry_state.attempt_number
    if tries > 1:
        metadata = {**metadata, "tries": tries}
    return faults.after_run(tasks, outcomes), metadata
