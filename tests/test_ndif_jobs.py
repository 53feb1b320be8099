"""Many examples in flight on NDIF (nsneurons.ndif_jobs): non-blocking jobs, their ids next to the store.

Unmarked tests check the ledger without a server. The `ndif` tests run against the real loopback
NDIF server (tests/ndif_server.py): scoring with jobs in flight gives the store blocking scoring
gives; a client SIGKILLed right after recording its third job resumes, collects the jobs still out
by id and sends no job twice (counted in the ledger's submitted.log, one line per job ever sent);
a recorded job the server does not know is sent again, with a message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
from fixtures_models import loaded, sentiment_proxies

from nsneurons import ndif_jobs
from nsneurons.ndif_jobs import JobCounts, JobLedger, jobs_folder

HERE = Path(__file__).resolve().parent


def _sent(store: Path) -> list[str]:
    """submitted.log: one line per job ever sent, '<index> <example> <job id>'."""
    log = jobs_folder(store) / "submitted.log"
    return log.read_text().splitlines() if log.exists() else []


def _in_flight(store: Path) -> dict[int, list[str]]:
    return {int(p.stem): json.loads(p.read_text())["jobs"] for p in jobs_folder(store).glob("*.json")}


# ----------------------------------------------------------------------------- without a server


def test_ledger_records_atomically_logs_each_job_and_ignores_another_host(tmp_path):
    ledger = JobLedger(jobs_folder(tmp_path / "s.zarr"), "http://127.0.0.1:1", "key")
    assert ledger.folder == tmp_path / "s.zarr.jobs" and ledger.jobs(0) == []
    ledger.record(2, "ex2", ["a"])
    ledger.record(2, "ex2", ["a", "b"])
    assert ledger.jobs(2) == ["a", "b"]
    assert _sent(tmp_path / "s.zarr") == ["2 ex2 a", "2 ex2 b"]
    assert sorted(p.name for p in ledger.folder.iterdir()) == ["2.json", "submitted.log"]  # no temporary file left
    assert JobLedger(ledger.folder, "http://127.0.0.1:2", "key").jobs(2) == []  # job ids mean nothing elsewhere
    assert JobLedger(ledger.folder, "http://127.0.0.1:1", "other").jobs(2) == []
    ledger.record(0, "ex0", ["c"])
    ledger.drop_done([False, False, True])
    assert ledger.jobs(2) == [] and ledger.jobs(0) == ["c"]
    ledger.finish(0)
    assert ledger.jobs(0) == []


def test_counts_line():
    counts = JobCounts()
    counts.add(submitted=3, running=2)
    counts.add(running=-1, collected=2)
    assert counts.line() == "jobs 3 submitted, 1 running, 2 collected"
    counts.add(resumed=2, resubmitted=1)
    assert counts.line() == "jobs 3 submitted, 2 picked up by id, 1 running, 2 collected, 1 resent"


def test_jobs_in_flight_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="expected a whole number >= 1, got 0"):
        ndif_jobs.score_in_flight(None, [], [], [], None, tmp_path / "s.zarr", 0, None)


# ----------------------------------------------------------------------------- against the server


@pytest.fixture
def remote(ndif_server, monkeypatch):
    from nnsight import CONFIG

    from nsneurons.models import load_model

    monkeypatch.setattr(CONFIG.APP, "REMOTE_LOGGING", False)
    return load_model(ndif_server.model_path, remote=ndif_server.url)


def _score(model, store: Path, n: int, jobs: int | None, path: str = "staircase", progress: bool = False):
    from nsneurons.attribution import AttributionConfig
    from nsneurons.scoring import score_proxies

    config = AttributionConfig(target="ace", steps=4, path=path)
    return score_proxies(model, sentiment_proxies(n), config, store, progress=progress, jobs=jobs)


@pytest.mark.ndif
@pytest.mark.slow
@pytest.mark.parametrize("path, sessions", [("staircase", 1), ("full", 3)])  # sessions per example
def test_jobs_in_flight_give_the_blocking_store(remote, tmp_path, path, sessions):
    blocking = loaded(_score(remote, tmp_path / "b.zarr", 3, None, path))
    assert not jobs_folder(tmp_path / "b.zarr").exists()
    jobs = loaded(_score(remote, tmp_path / "j.zarr", 3, 2, path))
    xr.testing.assert_identical(blocking, jobs)
    sent = _sent(tmp_path / "j.zarr")
    assert len(sent) == 3 * sessions and len({line.split()[2] for line in sent}) == 3 * sessions
    assert sorted(line.split()[1] for line in sent) == sorted(f"ex{e}" for e in range(3) for _ in range(sessions))
    assert _in_flight(tmp_path / "j.zarr") == {}  # every example's jobs collected and forgotten


@pytest.mark.ndif
@pytest.mark.slow
def test_killed_client_collects_its_jobs_by_id_and_sends_none_twice(ndif_server, remote, tmp_path, capsys):
    store = tmp_path / "j.zarr"
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE.parent),
        "NSNEURONS_FAULT_AT": "ndif.job_recorded#3",  # SIGKILL right after the third job id is on disk
        "NSNEURONS_FAULT_ACTION": "kill",
    }
    child = subprocess.run(
        [sys.executable, __file__, ndif_server.url, ndif_server.model_path, str(store)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout[-2000:] + child.stderr[-3000:]
    from nsneurons.store import open_scores

    sent, out = _sent(store), _in_flight(store)
    assert len(sent) == 3
    with pytest.warns(UserWarning, match="is incomplete"):
        done = open_scores(store, allow_incomplete=True)["done"].values
    with capsys.disabled():
        print(f"\nkilled with {len(sent)} jobs sent, examples done {done.tolist()}, jobs out {out}")
    # Jobs out at the kill (an example written but not yet forgotten is dropped on restart, not collected).
    killed_with = sum(len(jobs) for index, jobs in out.items() if not done[index])
    assert killed_with >= 1  # the third job at least was still out
    capsys.readouterr()
    resumed = _score(remote, store, 4, 2, progress=True)
    err = capsys.readouterr().err
    assert f"{killed_with} picked up by id" in err, err[-2000:]
    with capsys.disabled():
        print("\nresumed:", err.strip().splitlines()[-1].split("\r")[-1])
    # Four examples, one session each: four jobs in all, none sent twice (a finished example is not
    # computed again, a job in flight at the kill is collected by its id).
    after = _sent(store)
    assert len(after) == 4 and after[:3] == sent
    assert sorted(line.split()[1] for line in after) == ["ex0", "ex1", "ex2", "ex3"]
    assert _in_flight(store) == {}
    xr.testing.assert_identical(loaded(_score(remote, tmp_path / "b.zarr", 4, None)), loaded(resumed))


@pytest.mark.ndif
@pytest.mark.slow
def test_a_job_the_server_does_not_know_is_sent_again(remote, tmp_path, monkeypatch, capsys):
    store = tmp_path / "j.zarr"
    ledger = JobLedger(jobs_folder(store), remote.remote, remote.lm.to_model_key())
    ledger.record(1, "ex1", ["no-such-job"])
    monkeypatch.setattr(ndif_jobs, "LOST_AFTER_S", 1.0)
    capsys.readouterr()
    jobs = loaded(_score(remote, store, 2, 2, progress=True))
    err = capsys.readouterr().err
    assert (
        "example 'ex1': NDIF job no-such-job cannot be collected (the server has no record of it after 1 s); submitting it again"
        in err
    )
    assert "1 resent" in err
    with capsys.disabled():
        print("\nlost job:", [line for line in err.splitlines() if "cannot be collected" in line])
    assert [line.split()[:2] for line in _sent(store)].count(["1", "ex1"]) == 2  # the bogus one, then the real one
    xr.testing.assert_identical(loaded(_score(remote, tmp_path / "b.zarr", 2, None)), jobs)


@pytest.mark.ndif
@pytest.mark.slow
def test_score_cli_with_jobs(ndif_server, tmp_path):
    out = tmp_path / "s.zarr"
    argv = ["score", "--model", ndif_server.model_path, "--remote", "--task", "sentiment", "--examples", "2", "--steps", "2"]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "NDIF_HOST": ndif_server.url}
    proc = subprocess.run(
        [sys.executable, "-m", "nsneurons.cli", *argv, "--out", str(out), "--jobs", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "jobs 2 submitted, 0 running, 2 collected" in proc.stderr
    assert len(_sent(out)) == 2 and _in_flight(out) == {}


if __name__ == "__main__":  # the child the kill test runs (and SIGKILLs): url, model folder, store
    from nnsight import CONFIG

    from nsneurons.models import load_model

    CONFIG.APP.REMOTE_LOGGING = False
    url, model_path, out = sys.argv[1:4]
    _score(load_model(model_path, remote=url), Path(out), 4, 2)
    sys.exit("not killed: the fault was never reached")
