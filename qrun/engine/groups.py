"""Provider-side groups of jobs (an IBM Batch): one per backend, kept across applies, closed
once the backend has nothing left to send.

A provider that schedules a campaign's jobs together gives its adapter three optional hooks:

    group_id() -> str | None       the open group its new jobs go into (read after a submit)
    rejoin_group(group_id) -> None a group an earlier apply opened: send into it again if it
                                   still takes jobs (else the adapter opens a new one)
    close_group(group_id) -> None  no more jobs will be sent into it

The group's id is kept in the state as soon as a submission made or joined it, so an apply
after a crash, a Ctrl-C or a spent quota sends the rest of the campaign into the same group.
Once no job of the backend is left to send (none pending, none whose submission is
unknown), the group is closed and forgotten. A group that cannot be rejoined or closed costs
nothing: the provider ends it on its own when its time is up.
"""

from __future__ import annotations

from concurrent.futures import Future, wait

from ..manifest import Manifest
from ..planner import canonical_json
from ..store import JobRow, Store
from .calls import CallThreads


def group_key(manifest: Manifest, backend: str) -> str:
    """The state's key for a backend's open group: its identity (provider, device,
    options), so a group is never rejoined on another device than the one it was opened on."""
    identity = manifest.backends[backend].identity if backend in manifest.backends else backend
    return "provider_group:" + canonical_json(identity)


def _close_quietly(adapter, group: str) -> None:
    try:
        adapter.close_group(group)
    except Exception:
        pass  # the provider ends the group when its time is up; the jobs in it run on


class Groups:
    """The open groups of one engine run, per backend."""

    def __init__(self, store: Store, manifest: Manifest, apply_id: int):
        self.store = store
        self.manifest = manifest
        self.apply_id = apply_id
        self._configs: dict[str, dict] = {}  # backend -> a job's backend config (to make its adapter)
        self._closing: list[Future] = []
        self._ids: dict[str, str | None] = {}  # backend -> its kept group, as read or written

    def seen(self, job: JobRow) -> None:
        """Remember how to reach the backend of a job this run handles."""
        self._configs.setdefault(job.backend, job.backend_config)

    def backends(self) -> list[str]:
        return list(self._configs)

    def stored(self, backend: str, adapter) -> str | None:
        """The group kept for the backend, for an adapter that groups jobs (else None)."""
        if not hasattr(adapter, "group_id"):
            return None
        if backend not in self._ids:
            self._ids[backend] = self.store.meta(group_key(self.manifest, backend))
        return self._ids[backend]

    def submitted(self, backend: str, adapter, group: str | None, threads: CallThreads) -> None:
        """A job of ``backend`` went into ``group`` (None: the adapter keeps none): keep it
        for later applies, and close it if that was the backend's last job to send."""
        if not hasattr(adapter, "group_id"):
            return
        if group is not None and group != self.stored(backend, adapter):
            self.store.set_meta(group_key(self.manifest, backend), group)
            self._ids[backend] = group
        self.close_if_done(backend, adapter, threads)

    def close_if_done(self, backend: str, adapter, threads: CallThreads) -> None:
        group = self.stored(backend, adapter)
        if group is None or self.store.jobs_to_send(self.apply_id, backend) > 0:
            return
        # Forgotten first: the provider closes a group on its own when its time is up, so a
        # close that fails costs nothing, while a closed group kept would be rejoined in vain.
        self.store.delete_meta(group_key(self.manifest, backend))
        self._ids[backend] = None
        self._closing.append(threads.submit(_close_quietly, adapter, group))

    def close_finished(self, adapter_of, threads: CallThreads, skip: set) -> None:
        """At the end of a run: close the groups of backends with nothing left to send
        (their last job was refused, or an earlier apply stopped between the last submission
        and the close)."""
        for backend, config in self._configs.items():
            if backend in skip:
                continue
            try:
                adapter = adapter_of(config)
            except Exception:
                continue  # no SDK or credentials: the group expires at the provider
            self.close_if_done(backend, adapter, threads)

    def wait_for_closes(self, seconds: float) -> None:
        """Give the closes sent a bounded time to be answered (the calls' threads are
        daemons, which end with the process)."""
        if self._closing:
            wait(self._closing, timeout=seconds)
