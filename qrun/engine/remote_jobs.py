"""The rules for remote jobs in one run: how each is submitted, followed and settled.

Never paying twice rests on one rule: an attempt whose fate at the provider is unknown (its
submission may have landed) stays unknown until the provider answers a lookup of its tag.
Every unknown tag of a job is looked up before the job is sent again; a lookup that fails or
is refused leaves the job as it is, for a later try or the next apply, with the reason.
A handle the provider no longer knows (or one whose job carries another tag) is not trusted:
the tag is looked up, and an attempt found under neither is lost and may be tried again.

Calls run in threads (calls.py); their answers are settled here, in the engine's loop, which
commits them. Each job's phase (remote.py) keeps two calls about one job from overlapping.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, wait
from typing import TYPE_CHECKING

from ..providers import remote_adapter_for
from ..providers.base import (
    JobNotFound,
    NoRoomYet,
    QuotaSpent,
    RemoteStatus,
    SubmissionUnknown,
    TransientBackendError,
)
from ..store import NEXT_APPLY, RUNNING, SUBMITTED, SUBMITTING, JobRow
from .calls import CALL_THREADS, CallThreads, Op, SubmitOutcome, describe, fetch_and_report, submit_once
from .groups import Groups
from .remote import Call, RemoteJob

if TYPE_CHECKING:
    from .loop import Engine

# Polls of one job left unanswered in a row (each already retried inside the adapter) before
# this run stops following it; with the polls' backoff that is about ten minutes.
POLLS_UNANSWERED = 25
# Polls of one job refused in a row (a credential revoked meanwhile...) before this run
# stops following it: the job stays submitted, and the next apply re-attaches it.
POLLS_REFUSED = 8
# Finished jobs whose reported usage is read again at the end of a run, at most (the
# oldest first; the next apply reads the rest).
REPORTS_REREAD = 50


def _settled(old: dict, new: dict) -> dict:
    """A report read again: its figures over the first one's, but where it lacks one (read
    in another process than the fetch, it may not know the shots returned)."""
    usage = {**(old.get("usage") or {}),
             **{k: v for k, v in (new.get("usage") or {}).items() if v is not None or k == "seconds"}}
    return {**old, **new, "usage": usage, "calibration": new.get("calibration") or old.get("calibration")}


def _report_again(config: dict, handle: str) -> dict | None:
    """What the provider says of a finished job now, if its adapter can tell."""
    ask = getattr(_adapter_of(config), "job_report", None)
    return ask(handle) if ask is not None else None


def _adapter_of(config: dict):
    """The (cached) adapter of a job's backend."""
    return remote_adapter_for(config["provider"], config["device"], config["options"],
                              config.get("credentials"))


class RemoteJobs:
    """The remote jobs one engine run follows, and the calls about them.

    The engine hands over ready jobs (``begin``), asks for due polls (``poll_due``) and
    passes each finished call back (``settle``); outcomes go to the engine's ``complete``
    and ``fail``, which record them.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.store = engine.store
        self.manifest = engine.manifest
        self.apply_id = engine.apply_id
        self.jobs: dict[int, RemoteJob] = {}  # job id -> remote job this run follows
        self._unanswered: dict[int, int] = {}  # job id -> its submissions left unanswered
        self._threads: CallThreads | None = None
        self.groups = Groups(self.store, self.manifest, self.apply_id)

    def next_poll(self) -> float | None:
        """When the next poll falls due, if any job waits for one."""
        due = [r.next_poll for r in self.jobs.values() if not r.busy]
        return min(due) if due else None

    def leave(self, backend: str) -> None:
        """Stop following the backend's jobs in this run (their state stays as it is)."""
        for job_id, remote in list(self.jobs.items()):
            if remote.job.backend == backend:
                del self.jobs[job_id]

    def finish(self, grace: float) -> None:
        """The run ended with nothing left to do: read again the usage providers had not
        settled when their jobs were fetched, close the provider-side groups of backends
        with nothing left to send, and give both a bounded time."""
        rereads = self.store.unfinal_reports(REPORTS_REREAD)
        if not rereads and self._threads is None:
            return
        if self._threads is None:
            self._threads = CallThreads(CALL_THREADS)
        asked = [(attempt, old, self._threads.submit(_report_again, config, handle))
                 for attempt, backend, config, handle, old in rereads if not self.engine.left(backend)]
        self.groups.close_finished(_adapter_of, self._threads,
                                   skip={b for b in self.groups.backends() if self.engine.left(b)})
        if asked:
            wait([future for _, _, future in asked], timeout=grace)
        for attempt, old, future in asked:
            report = future.result() if future.done() and future.exception() is None else None
            if report is not None:
                self.store.replace_report(attempt, _settled(old, report))
        self.groups.wait_for_closes(grace)

    def shutdown(self) -> None:
        if self._threads is not None:
            self._threads.shutdown()

    def settle(self, op: Op, future: Future) -> None:
        handler = {Call.SUBMIT: self._settle_submit, Call.POLL: self._settle_poll,
                   Call.FETCH: self._settle_fetch, Call.CANCEL: self._settle_cancel,
                   Call.FIND: self._settle_find}[op.kind]
        handler(op, future)

    def resume(self) -> None:
        """Re-attach, by handle, the remote jobs an earlier run left submitted or running.

        Jobs it left submitting (their fate unknown) are started again like pending ones:
        _begin_remote looks their tags up before anything is sent."""
        for job, attempt_id, tag, handle, state in self.store.unfinished_remote_jobs(self.apply_id):
            self.groups.seen(job)
            if state != SUBMITTING and handle is not None:
                self.jobs[job.id] = RemoteJob.attached(job, attempt_id, tag,
                                                          self.store.job_work(job.id), handle)

    def begin(self, job: JobRow):
        """Record the intent to submit (attempt and tag); return what submits once committed.

        A job left submitting keeps its attempt: its tag is looked up first. A job started
        anew gets a new attempt; any earlier tag of it whose fate is unknown (from a qrun
        that did not keep fates, or a cancel) is looked up before it is sent.
        """
        opened = self.store.open_attempt(job.id) if job.state == SUBMITTING else None
        if opened is None:
            self.store.start_attempt(self.apply_id, job, state=SUBMITTING)
        attempt = self.store.open_attempt(job.id)
        if attempt is None:
            raise RuntimeError(f"job {job.id} has no open attempt right after one was started")
        attempt_id, tag = attempt
        lookups = [(a, t) for a, t in self.store.unresolved_tags(job.id)
                   if a != attempt_id or opened is not None]  # a new tag was never sent
        remote = RemoteJob(job=job, attempt_id=attempt_id, tag=tag,
                           slices=self.store.job_work(job.id), lookups=lookups)
        self.groups.seen(job)
        self.jobs[job.id] = remote
        return lambda: self._call(Call.SUBMIT, remote)

    def _call(self, kind: Call, remote: RemoteJob) -> None:
        try:
            adapter = _adapter_of(remote.job.backend_config)
        except Exception as exc:  # no SDK, no credentials, a bad region: nothing can be sent
            self._unreachable(kind, remote, f"cannot reach {remote.job.provider}: {describe(exc)}")
            return
        if self._threads is None:
            self._threads = CallThreads(CALL_THREADS)
        remote.start(kind)
        if kind is Call.SUBMIT:
            tasks = [self.engine.task(work) for work in remote.slices]
            future = self._threads.submit(submit_once, adapter, tasks, remote.job.seed,
                                          remote.tag, list(remote.lookups),
                                          self.groups.stored(remote.job.backend, adapter))
        elif kind is Call.POLL:
            future = self._threads.submit(adapter.poll, remote.handle)
        elif kind is Call.FETCH:
            tasks = [self.engine.task(work) for work in remote.slices]
            future = self._threads.submit(fetch_and_report, adapter, remote.handle, tasks)
        elif kind is Call.FIND:
            future = self._threads.submit(adapter.find, remote.tag)
        else:
            future = self._threads.submit(adapter.cancel, remote.handle)
        self.engine.in_flight[future] = Op(kind, remote.job, remote.attempt_id, remote.slices, remote)

    def _unreachable(self, kind: Call, remote: RemoteJob, reason: str) -> None:
        """No adapter for the job's backend. A job that may be at the provider waits for the
        next apply; one that surely is not (never sent) fails."""
        self.forget(remote)
        op = Op(kind, remote.job, remote.attempt_id, remote.slices, remote)
        if kind is Call.SUBMIT and not remote.lookups:
            self.engine.fail(op, reason, transient=False, tag_absent=True)
            return
        waiting = (reason + "; the job may be at the provider already, so it waits for the next "
                   "apply (which re-attaches it or looks its tag up first)")
        if kind is Call.SUBMIT:
            self.store.defer_submission(self.apply_id, remote.job.id, NEXT_APPLY, waiting)
        else:
            self.store.note_job_error(self.apply_id, remote.job.id, waiting)

    def poll_due(self) -> None:
        now = time.time()
        for remote in list(self.jobs.values()):
            if not remote.due(now):
                continue
            timeout = self._timeout(remote.job)
            if timeout and now - remote.submitted_at > timeout:
                self._call(Call.CANCEL, remote)
            else:
                self._call(Call.POLL, remote)

    def _timeout(self, job: JobRow) -> float | None:
        spec = self.manifest.backends.get(job.backend)
        return spec.timeout if spec else None

    def _follow(self, remote: RemoteJob, handle: str) -> None:
        remote.follow(handle)
        self.jobs[remote.job.id] = remote  # again, if Ctrl-C let go of it meanwhile

    def forget(self, remote: RemoteJob) -> None:
        """The job leaves this run: done, failed, deferred or left to the next apply."""
        if self.jobs.get(remote.job.id) is remote:
            del self.jobs[remote.job.id]

    def _settle_submit(self, op: Op, future: Future) -> None:
        remote = op.about
        outcome: SubmitOutcome = future.result()
        # Earlier tags the provider does not hold are absent for good. The job's own tag is
        # not: it was sent again right after its lookup, so its fate is that send's (a
        # handle, a refusal, or unknown again when the answer was lost).
        absent = [a for a in outcome.absent if a != remote.attempt_id]
        if absent:
            self.store.mark_tags_absent(absent)
        handle = outcome.handle
        if handle is None:  # not sent, or its fate unknown: it leaves this try
            self.forget(remote)
        if outcome.lookup_of is not None or isinstance(outcome.error, SubmissionUnknown):
            self._lookup_failed(remote, outcome)
        elif outcome.unanswered:
            # Unknown whether the provider took it: the attempt stays "submitting" and its
            # next try looks the tag up first.
            self._defer_submission(remote, describe(outcome.error))
        elif isinstance(outcome.error, NoRoomYet):
            self._wait_for_room(remote, outcome.error)
        elif isinstance(outcome.error, QuotaSpent):
            self._stop_submitting(remote, outcome.error)
        elif outcome.error is not None or handle is None:  # refused (invalid circuit, over a limit, credentials)
            self.engine.fail(op, describe(outcome.error), transient=False, tag_absent=True)
        elif outcome.found is not None and outcome.found[0] != remote.attempt_id:
            # An earlier attempt's tag found the job: that attempt is the job's.
            attempt_id, tag = outcome.found
            self.store.adopt_attempt(self.apply_id, remote.job.id, attempt_id, handle,
                                     superseded=remote.attempt_id)
            remote.attempt_id, remote.tag = attempt_id, tag
            self._follow(remote, handle)
            self._sent(remote, outcome)
        else:
            self.store.record_submission(self.apply_id, remote.job.id, remote.attempt_id, handle)
            self.engine.service(remote.job.backend).room_waits = 0
            self._follow(remote, handle)
            self._sent(remote, outcome)

    def _sent(self, remote: RemoteJob, outcome: SubmitOutcome) -> None:
        """A job is at the provider: keep its group, closed after the backend's last job."""
        if self._threads is not None:
            self.groups.submitted(remote.job.backend, _adapter_of(remote.job.backend_config),
                                  outcome.group, self._threads)

    def _wait_for_room(self, remote: RemoteJob, error: Exception) -> None:
        """The account has as many unfinished jobs as it may: this job, and every other
        submission to the backend, waits (backing off while it lasts); none fails for it."""
        service = self.engine.service(remote.job.backend)
        service.room_waits += 1
        service.room_at = time.time() + self.engine.backoff(service.room_waits)
        reason = f"waiting for room at the provider: {describe(error)}"
        self.store.wait_for_room(self.apply_id, remote.job.id, remote.attempt_id, service.room_at, reason)
        self.engine.progress.waiting(remote.job.backend, reason)
        self.engine.note_once("room", remote.job.backend, f"{remote.job.backend}: submissions "
                              f"waited for room at the provider ({describe(error)})")

    def _stop_submitting(self, remote: RemoteJob, error: Exception) -> None:
        """The period's quota is spent: nothing more is sent to the backend in this run (its
        submitted jobs are still followed); what is left waits for a later apply."""
        service = self.engine.service(remote.job.backend)
        service.closed = (f"the quota is spent: {describe(error)}; left for a later apply, "
                          "once the quota renews")
        self.store.wait_for_room(self.apply_id, remote.job.id, remote.attempt_id, NEXT_APPLY,
                                 service.closed)
        self.engine.note_once("quota", remote.job.backend, f"{remote.job.backend}: {service.closed}")

    def _defer_submission(self, remote: RemoteJob, error: str) -> None:
        """Try the submission (its lookups first) again later in this run, a bounded number
        of times; a service that stays unreachable is left for the next apply."""
        tries = self._unanswered[remote.job.id] = self._unanswered.get(remote.job.id, 0) + 1
        retry_at = time.time() + self.engine.backoff(tries) \
            if tries < self.manifest.retry.max_attempts else NEXT_APPLY
        if retry_at == NEXT_APPLY:
            error += " (left for the next apply, which looks the job up first)"
        self.store.defer_submission(self.apply_id, remote.job.id, retry_at, error)

    def _lookup_failed(self, remote: RemoteJob, outcome: SubmitOutcome) -> None:
        """A tag could not be looked up: nothing is sent, the job's fate stays unknown."""
        why = describe(outcome.error)
        tag = outcome.lookup_of or remote.tag
        consequence = ("an earlier submission of this job may have been accepted, so nothing "
                       "is sent again until a lookup answers")
        if outcome.unanswered:
            self._defer_submission(remote, f"no answer to the lookup of tag {tag} ({why}); "
                                           f"{consequence}")
            return
        self.store.defer_submission(
            self.apply_id, remote.job.id, NEXT_APPLY,
            f"the provider refused the lookup of tag {tag}: {why}; {consequence}. Fix the cause "
            "(a credential?) and run `qrun apply`; if the provider cannot look tags up, check "
            "its job list, then `qrun retry --resubmit-unresolved`")

    def _settle_poll(self, op: Op, future: Future) -> None:
        remote = op.about
        try:
            status: RemoteStatus = future.result()
        except JobNotFound as exc:
            self._distrust(remote, f"the provider has no job {remote.handle} any more ({describe(exc)})")
            return
        except TransientBackendError as exc:  # polling again later is always safe
            remote.unanswered_polls += 1
            if remote.unanswered_polls >= POLLS_UNANSWERED:
                self._stop_following(remote, f"no answer to {POLLS_UNANSWERED} polls "
                                             f"({describe(exc)})")
                return
            self._poll_later(remote)
            return
        except Exception as exc:  # refused: may pass (a credential renewed), but not for ever
            remote.refused_polls += 1
            if remote.refused_polls >= POLLS_REFUSED:
                self._stop_following(remote, f"{POLLS_REFUSED} polls refused ({describe(exc)})")
                return
            self._poll_later(remote)
            return
        remote.answered()
        if status.tags is not None and remote.tag not in status.tags:
            shown = ", ".join(status.tags) or "none"
            self._distrust(remote, f"the job behind handle {remote.handle} carries other tags "
                                   f"({shown}), not this attempt's {remote.tag}")
            return
        if status.state == "done":
            self.store.note_provider_state(self.apply_id, remote.job.id, RUNNING,
                                           status.provider_state)
            self._call(Call.FETCH, remote)
            return
        if status.finished:
            self.forget(remote)
            error = status.error or f"the provider reports the job {status.provider_state}"
            self.engine.fail(op, error, transient=status.transient)
            return
        self.store.note_provider_state(self.apply_id, remote.job.id,
                                       RUNNING if status.state == "running" else SUBMITTED,
                                       status.provider_state)
        self._poll_later(remote)

    def _stop_following(self, remote: RemoteJob, why: str) -> None:
        """Leave a submitted job to the next apply, which re-attaches it by its handle."""
        self.forget(remote)
        reason = f"job {remote.job.id} ({remote.handle}): {why}; left submitted, `qrun apply` re-attaches it"
        self.store.note_job_error(self.apply_id, remote.job.id, reason)
        self.engine.outcome.notices.append(reason)

    def _distrust(self, remote: RemoteJob, why: str) -> None:
        """The handle names no job of this attempt: look the attempt's tag up."""
        remote.distrust = why
        self._call(Call.FIND, remote)

    def _settle_find(self, op: Op, future: Future) -> None:
        remote = op.about
        try:
            handle = future.result()
        except Exception as exc:
            self._stop_following(remote, f"{remote.distrust}, and looking its tag {remote.tag} up "
                                         f"failed ({describe(exc)})")
            return
        if handle is not None and handle != remote.handle:  # the tag names the job: follow it
            self.store.record_submission(self.apply_id, remote.job.id, remote.attempt_id, handle)
            self._follow(remote, handle)
            return
        self.forget(remote)
        self.engine.fail(op, f"{remote.distrust}, and no job carries its tag {remote.tag}: the "
                         "attempt is lost", transient=True, tag_absent=True)

    def _settle_fetch(self, op: Op, future: Future) -> None:
        remote = op.about
        try:
            counts, report = future.result()
        except JobNotFound as exc:
            self._distrust(remote, f"the provider has no job {remote.handle} any more ({describe(exc)})")
            return
        except TransientBackendError:
            self._poll_later(remote)  # the result stays at the provider: fetch again later
            return
        except Exception as exc:
            self.forget(remote)
            self.engine.fail(op, describe(exc), transient=False)
            return
        self.forget(remote)
        config = remote.job.backend_config
        adapter = remote_adapter_for(config["provider"], config["device"], config["options"],
                                     config.get("credentials"))
        metadata = {**adapter.metadata(), "remote_id": remote.handle}
        if report and report.get("calibration"):  # with each result: what it ran under
            metadata["calibration"] = report["calibration"]
        self.engine.complete(op, counts, metadata, report)

    def _settle_cancel(self, op: Op, future: Future) -> None:
        remote = op.about
        try:
            future.result()
        except JobNotFound:
            pass  # nothing left at the provider to cancel
        except TransientBackendError:
            self._poll_later(remote)  # try to cancel again at the next due time
            return
        except Exception as exc:  # the provider refuses: report it, do not ask forever
            self.forget(remote)
            self.engine.fail(op, f"timed out, and the provider refused to cancel it: {describe(exc)}",
                         transient=False)
            return
        self.forget(remote)
        timeout = self._timeout(remote.job)
        self.engine.fail(op, f"timed out after {timeout:g} s; the remote job was cancelled",
                     transient=False)

    def _poll_later(self, remote: RemoteJob) -> None:
        remote.poll_later()
