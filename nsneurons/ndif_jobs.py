"""Many examples in flight on NDIF: each example's IG sessions run as non-blocking jobs whose ids are
kept next to the store, so a client that dies picks its jobs up by id instead of sending them again.

- `JobLedger(store)`: the folder ``<store>.jobs/`` holds one ``<index>.json`` per example with jobs
  out (``{"example", "host", "model_key", "jobs": [one job id per session of the example, in order]}``),
  replaced atomically after each submission and before any wait, and ``submitted.log``, one line
  per job ever sent (``<index> <example id> <job id>``). An example's file goes once its results
  are in the store (its ``done`` chunk says so; a file left by a crash in between is dropped on restart).
- `JobBackend`: nnsight's `RemoteBackend` that submits without blocking, records the id, polls, and
  puts the saved values into the session's frame as a blocking run does, so the IG code after a
  session is unchanged. When the ledger already holds this session's job, it polls that job instead
  of submitting; a job the server failed, forgot or whose result can no longer be downloaded (its
  presigned url expires: one hour on ndif 0.1.2) is sent again, with a message.
- `score_in_flight(...)`: up to ``jobs`` examples at once, one thread each (nnsight keeps its tracing
  state per thread); each result goes to ``on_result`` in the calling thread as its example finishes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from nnsight.intervention.backends.remote import RemoteBackend, RemoteError
from nnsight.schema.response import Status
from nnsight.tracing.tracer import save
from nnsight.tracing.util import push

from .faults import checkpoint

#: A job recorded by an earlier run whose status the server does not know after this long is lost.
LOST_AFTER_S = 60.0
POLL_S = 0.2  # between status polls of one job


class JobLost(RuntimeError):
    """The server no longer has a job's status or result."""


def jobs_folder(store: Path) -> Path:
    """Where the job ids of the store at ``store`` are kept."""
    store = Path(store)
    return store.with_name(store.name + ".jobs")


@dataclass
class JobCounts:
    """What the progress bar shows; updated from the example threads."""

    submitted: int = 0  # jobs sent by this process
    resumed: int = 0  # jobs of an earlier run polled by id
    running: int = 0  # jobs now out
    collected: int = 0  # results received
    resubmitted: int = 0  # jobs failed, forgotten or expired on the server, sent again
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def line(self) -> str:
        again = f", {self.resubmitted} resent" if self.resubmitted else ""
        resumed = f", {self.resumed} picked up by id" if self.resumed else ""
        return f"jobs {self.submitted} submitted{resumed}, {self.running} running, {self.collected} collected{again}"


class JobLedger:
    """The job ids of one store's examples (see the module doc); safe to use from several threads."""

    def __init__(self, folder: Path, host: str, model_key: str):
        self.folder, self.host, self.model_key = Path(folder), host, model_key
        self.lock = threading.Lock()

    def _file(self, index: int) -> Path:
        return self.folder / f"{index}.json"

    def jobs(self, index: int) -> list[str]:
        """The example's recorded job ids (empty when none, or when they were sent to another host or model)."""
        try:
            entry = json.loads(self._file(index).read_text())
        except (FileNotFoundError, ValueError):
            return []
        if entry.get("host") != self.host or entry.get("model_key") != self.model_key:
            return []
        return list(entry.get("jobs", []))

    def record(self, index: int, example: str, jobs: list[str]) -> None:
        """Replace the example's job list atomically and log the newest job as sent."""
        entry = {"example": example, "host": self.host, "model_key": self.model_key, "jobs": jobs}
        with self.lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self._file(index).with_suffix(f".tmp{threading.get_ident()}")
            with open(tmp, "w") as f:
                json.dump(entry, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._file(index))
            with open(self.folder / "submitted.log", "a") as log:
                log.write(f"{index} {example} {jobs[-1]}\n")
                log.flush()
                os.fsync(log.fileno())

    def finish(self, index: int) -> None:
        """The example's results are in the store: forget its jobs."""
        self._file(index).unlink(missing_ok=True)

    def drop_done(self, done: Sequence[bool]) -> None:
        """Forget the jobs of examples already in the store (a crash between the write and `finish`)."""
        for index, is_done in enumerate(done):
            if is_done:
                self.finish(index)


class JobBackend(RemoteBackend):
    """One example's sessions as non-blocking jobs (module doc). Make a new one per attempt: the
    k-th session it runs is the example's k-th job in the ledger."""

    def __init__(self, model, ledger: JobLedger, index: int, example: str, counts: JobCounts, say: Callable[[str], None]):
        super().__init__(model.lm.to_model_key(), host=ledger.host, blocking=False)
        self.ledger, self.index, self.example, self.counts, self.say = ledger, index, example, counts, say
        self.known = ledger.jobs(index)
        self.sent: list[str] = []

    def __call__(self, tracer=None):
        seq = len(self.sent)
        result = None
        if seq < len(self.known):
            self.job_id = self.known[seq]
            self.counts.add(resumed=1, running=1)
            try:
                result = self.wait_for(tracer, recorded=True)
            except (JobLost, RemoteError) as err:
                why = ([line.strip() for line in str(err).splitlines() if line.strip()] or ["no message"])[-1]
                self.say(f"example {self.example!r}: NDIF job {self.job_id} cannot be collected ({why}); submitting it again")
                self.counts.add(resubmitted=1)
            finally:
                self.counts.add(running=-1)
        if result is None:
            self.known = self.known[:seq]  # later sessions of this example depend on this one: send them again too
            self.job_id = None
            self.submit(tracer)
            self.sent.append(self.job_id)
            self.ledger.record(self.index, self.example, self.sent)
            self.counts.add(submitted=1, running=1)
            checkpoint("ndif.job_recorded")
            try:
                result = self.wait_for(tracer, recorded=False)
            finally:
                self.counts.add(running=-1)
        else:
            self.sent.append(self.job_id)
        self.counts.add(collected=1)
        for value in result.values():  # as nnsight's blocking run: the session's saved names get their values
            save(value)
        if tracer is not None and tracer.info is not None and tracer.info.frame is not None:
            push(tracer.info.frame, result)
        return result

    def wait_for(self, tracer, recorded: bool):
        """Poll the job until its result is here. A job an earlier run recorded that the server does not
        know after LOST_AFTER_S, or whose result cannot be downloaded any more, is `JobLost`."""
        import httpx

        start = time.monotonic()
        self.status = None
        while True:
            try:
                result = self.poll(tracer)
            except httpx.HTTPStatusError as err:  # the presigned result url expired or the blob is gone
                raise JobLost(f"its result can no longer be downloaded: HTTP {err.response.status_code}") from err
            if result is not None:
                return result
            if self.status == Status.COMPLETED:
                raise JobLost("the server reports it completed but gives no result")
            if recorded and self.status is None and time.monotonic() - start > LOST_AFTER_S:
                raise JobLost(f"the server has no record of it after {LOST_AFTER_S:.0f} s")
            time.sleep(POLL_S)


def score_in_flight(
    model,
    groups: Sequence[Sequence],
    todo: Sequence[int],
    done: Sequence[bool],
    attribute: Callable,
    store_path: Path,
    jobs: int,
    on_result: Callable[[int, list], None],
    counts: JobCounts | None = None,
    say: Callable[[str], None] | None = None,
) -> JobCounts:
    """Attribute the examples ``todo`` (indices into ``groups``; ``done``: the store's flags) with up to ``jobs`` in flight.

    ``attribute(model, group)`` computes one example (with the model whose sessions go through a
    `JobBackend`); ``on_result(index, results)`` runs in this thread as each example finishes. On a
    failure the examples not yet started are dropped, those in flight are still collected and handed
    over, then the first error is raised; job ids of unfinished examples stay in the ledger."""
    from .remote import with_retries

    if jobs < 1:
        raise ValueError(f"jobs in flight: expected a whole number >= 1, got {jobs!r}")
    counts = counts or JobCounts()
    say = say or (lambda text: print(text, file=sys.stderr))
    from nnsight import CONFIG

    host = model.remote if isinstance(model.remote, str) else CONFIG.API.HOST
    ledger = JobLedger(jobs_folder(store_path), host, model.lm.to_model_key())
    ledger.drop_done(done)

    def one(index: int) -> list:
        group = groups[index]
        example = group[0].example_id

        def attempt():
            return attribute(replace(model, session_backend=JobBackend(model, ledger, index, example, counts, say)), group)

        return with_retries(attempt, describe=f"example {example!r}")

    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="ndif-job") as pool:
        pending = {pool.submit(one, index): index for index in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    failure = failure or future.exception()
                    for other in pending:
                        other.cancel()
                    continue
                on_result(index, future.result())
                ledger.finish(index)
    if failure is not None:
        raise failure
    return counts
