"""`--shard i/n`: workers fill one scores store (one chunk per example, `done` included) that equals a
single worker's; an interrupted shard resumes; an older store with one `done` chunk still opens."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from fixtures_models import llama_style_tokenizer, loaded, sentiment_proxies, tiny_hf_model

import nsneurons.scoring as scoring
from nsneurons import cli
from nsneurons.attribution import AttributionConfig, attribute_proxies
from nsneurons.runlock import OutputLockedError, output_lock
from nsneurons.scoring import score_proxies
from nsneurons.shards import Shard, ShardError, conflicting_locks, parse_shard, progress_line, shard_lock
from nsneurons.store import StoreError, open_scores
from nsneurons.zarrio import write_atomically

ROOT = Path(__file__).resolve().parent.parent
CONFIG = AttributionConfig(target="ace", steps=2)


def _counting(monkeypatch, die_at=None):
    """attribute_proxies counting the examples it computes (and dying at the die_at-th)."""
    real, seen = attribute_proxies, []

    def counted(model, proxies, *args, **kwargs):
        if len(seen) + 1 == die_at:
            raise KeyboardInterrupt
        seen.append(proxies[0].example_id)
        return real(model, proxies, *args, **kwargs)

    monkeypatch.setattr(scoring, "attribute_proxies", counted)
    return seen


def test_parse_shard():
    assert parse_shard("1/4") == Shard(1, 4) and str(Shard(1, 4)) == "1/4"
    assert [i for i in range(7) if Shard(1, 3).takes(i)] == [1, 4]
    for bad, says in (("4/4", "0 <= i < n, got 4/4"), ("a/2", "expected i/n such as 0/4"), ("0/0", "n >= 1")):
        with pytest.raises(ShardError, match=says):
            parse_shard(bad)


@pytest.mark.slow
def test_two_shards_fill_a_store_equal_to_one_worker(tiny_llama, tmp_path, monkeypatch):
    one = loaded(score_proxies(tiny_llama, sentiment_proxies(3), CONFIG, tmp_path / "one.zarr", progress=False))
    seen = _counting(monkeypatch)
    first = score_proxies(tiny_llama, sentiment_proxies(3), CONFIG, tmp_path / "two.zarr", progress=False, shard=Shard(0, 2))
    assert seen == ["ex0", "ex2"] and first["done"].values.tolist() == [True, False, True]
    said = progress_line("two.zarr", first["done"].values, Shard(0, 2), "run")
    assert (
        said
        == "shard 0/2: done; two.zarr has 2 of 3 examples, 1 left to the other shards (a shard that stopped resumes with its own command)"
    )
    second = score_proxies(tiny_llama, sentiment_proxies(3), CONFIG, tmp_path / "two.zarr", progress=False, shard=Shard(1, 2))
    assert seen == ["ex0", "ex2", "ex1"]
    assert progress_line("two.zarr", second["done"].values, Shard(1, 2), "run").endswith(
        "is complete (3 of 3 examples); next: run"
    )
    xr.testing.assert_identical(one, loaded(open_scores(tmp_path / "two.zarr")))
    # Each example's flag is a chunk of its own: a worker rewrites no other example's file.
    assert sorted(p.name for p in (tmp_path / "two.zarr" / "done" / "c").iterdir()) == ["0", "1", "2"]


@pytest.mark.slow
def test_an_interrupted_shard_resumes_without_recomputing(tiny_llama, tmp_path, monkeypatch):
    whole = loaded(score_proxies(tiny_llama, sentiment_proxies(4), CONFIG, tmp_path / "one.zarr", progress=False))
    _counting(monkeypatch, die_at=2)  # shard 1/2 has ex1 and ex3: dies computing ex3
    with pytest.raises(KeyboardInterrupt):
        score_proxies(tiny_llama, sentiment_proxies(4), CONFIG, tmp_path / "s.zarr", progress=False, shard=Shard(1, 2))
    seen = _counting(monkeypatch)
    score_proxies(tiny_llama, sentiment_proxies(4), CONFIG, tmp_path / "s.zarr", progress=False, shard=Shard(1, 2))
    assert seen == ["ex3"]
    score_proxies(tiny_llama, sentiment_proxies(4), CONFIG, tmp_path / "s.zarr", progress=False, shard=Shard(0, 2))
    assert seen == ["ex3", "ex0", "ex2"]
    xr.testing.assert_identical(whole, loaded(open_scores(tmp_path / "s.zarr")))


@pytest.mark.slow
def test_a_store_with_one_done_chunk_resumes_with_one_worker_and_refuses_shards(tiny_llama, tmp_path, monkeypatch):
    """Stores made before per-example flags: one `done` chunk for all examples."""
    whole = loaded(score_proxies(tiny_llama, sentiment_proxies(3), CONFIG, tmp_path / "one.zarr", progress=False))
    old = whole.copy(deep=True)
    old["done"][:] = [True, False, False]
    per_example = {name: {"chunks": (1,) + old[name].shape[1:]} for name in old.data_vars if name != "done"}
    write_atomically(tmp_path / "old.zarr", old, extra={**per_example, "done": {"chunks": (3,)}})
    with pytest.raises(StoreError, match="one `done` chunk for all examples.*finish it with one worker \\(without --shard\\)"):
        score_proxies(tiny_llama, sentiment_proxies(3), CONFIG, tmp_path / "old.zarr", progress=False, shard=Shard(0, 2))
    seen = _counting(monkeypatch)
    resumed = score_proxies(tiny_llama, sentiment_proxies(3), CONFIG, tmp_path / "old.zarr", progress=False)
    assert seen == ["ex1", "ex2"]
    assert sorted(p.name for p in (tmp_path / "old.zarr" / "done" / "c").iterdir()) == ["0"]
    xr.testing.assert_identical(whole, loaded(resumed))


def test_locks_admit_other_shards_and_refuse_the_same_shard_or_no_shard(tmp_path):
    lock = tmp_path / "s.zarr.lock"
    with output_lock(shard_lock(lock, Shard(0, 2)), conflicting=conflicting_locks(lock, Shard(0, 2))):
        with output_lock(shard_lock(lock, Shard(1, 2)), conflicting=conflicting_locks(lock, Shard(1, 2))):
            assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr.shard-0-of-2.lock", "s.zarr.shard-1-of-2.lock"]
        with pytest.raises(OutputLockedError, match="in use by another nsneurons run"):
            with output_lock(shard_lock(lock, Shard(0, 2)), conflicting=conflicting_locks(lock, Shard(0, 2))):
                pass
        for shard in (None, Shard(0, 3)):
            with pytest.raises(OutputLockedError, match="conflicts with this one .*its lock: .*s.zarr.shard-0-of-2.lock"):
                with output_lock(shard_lock(lock, shard), conflicting=conflicting_locks(lock, shard)):
                    pass
    assert list(tmp_path.iterdir()) == []  # refused runs leave no lock file behind
    with output_lock(lock, conflicting=conflicting_locks(lock, None)):
        with pytest.raises(OutputLockedError, match="conflicts with this one"):
            with output_lock(shard_lock(lock, Shard(1, 2)), conflicting=conflicting_locks(lock, Shard(1, 2))):
                pass


def test_score_refuses_a_bad_shard_at_parse_time(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["score", "--model", "demo", "--task", "sentiment", "--out", "x.zarr", "--shard", "2/2"])
    assert stopped.value.code == 2
    assert "--shard: expected i/n with n >= 1 and 0 <= i < n, got 2/2" in capsys.readouterr().err


@pytest.mark.slow
def test_two_shard_processes_at_once_fill_one_store(tmp_path):
    """Two `nsneurons score --shard` processes started together (store creation included) = one worker."""
    tok = llama_style_tokenizer()
    tiny_hf_model("llama", layers=2, vocab_size=len(tok)).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NSNEURONS_DEBUG": "1"}
    base = [sys.executable, "-m", "nsneurons.cli", "-q", "score", "--model", str(tmp_path / "model"), "--task", "sentiment"]
    base += ["--examples", "5", "--steps", "2", "--layers", "0,1"]
    procs = [
        subprocess.Popen(
            [*base, "--out", str(tmp_path / "s.zarr"), "--shard", f"{i}/2"], env=env, stdout=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("is complete (5 of 5 examples)" in out for out in outs) >= 1
    one = subprocess.run([*base, "--out", str(tmp_path / "one.zarr")], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    xr.testing.assert_identical(loaded(open_scores(tmp_path / "one.zarr")), loaded(open_scores(tmp_path / "s.zarr")))
    assert np.abs(open_scores(tmp_path / "s.zarr").ig.values).max() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "one.zarr", "s.zarr"]  # no lock file left


@pytest.mark.slow
def test_run_in_shards_then_once_without(tmp_path, monkeypatch, capsys):
    """`run --shard` scores only; the run without --shard then finds every example scored and does the rest."""
    import yaml
    from fixtures_models import save_tiny_llama

    data = yaml.safe_load((ROOT / "recipes" / "tiny-ci.yaml").read_text())
    data.update(model=str(save_tiny_llama(tmp_path / "model")), output=str(tmp_path / "out"), identification_examples=3)
    data["selection"]["methods"] = ["neuronllm", "act"]  # one target: one store per task
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    store = tmp_path / "out" / "tiny-ci" / "scores" / "sentiment-ace.zarr"
    assert cli.main(["run", str(tmp_path / "r.yaml"), "--shard", "1/2"]) == 0
    assert f"shard 1/2: done; {store} has 1 of 3 examples, 2 left to the other shards" in capsys.readouterr().out
    assert not (tmp_path / "out" / "tiny-ci" / "tasks").exists()  # nothing after the attribution stage
    assert cli.main(["run", str(tmp_path / "r.yaml"), "--shard", "0/2"]) == 0
    said = capsys.readouterr().out
    assert f"shard 0/2: done; {store} is complete (3 of 3 examples); next: once every store is complete, `nsneurons run`" in said
    seen = _counting(monkeypatch)
    assert cli.main(["run", str(tmp_path / "r.yaml")]) == 0
    assert seen == [] and (tmp_path / "out" / "tiny-ci" / "report.md").is_file()
    assert cli.main(["run", str(tmp_path / "r.yaml"), "--shard", "0/2", "--set", "experiment=naica"]) == 3
    assert "--shard: only experiment 'neuronllm' runs in shards" in capsys.readouterr().err


@pytest.mark.ndif
@pytest.mark.slow
def test_two_shard_workers_on_ndif_fill_a_store_equal_to_one_worker(ndif_server, tmp_path, monkeypatch):
    """Against the loopback NDIF server: shard workers 0/2 and 1/2, each with its own remote model
    (as two client machines would have), fill one store equal to a single remote worker's, each
    example computed once."""
    from nnsight import CONFIG as NNSIGHT

    from nsneurons.runfolder import load_run_model

    monkeypatch.setattr(NNSIGHT.API, "HOST", NNSIGHT.API.HOST)  # connecting sets it: undone after the test
    monkeypatch.setattr(NNSIGHT.APP, "REMOTE_LOGGING", False)
    proxies = sentiment_proxies(3)
    one_model = load_run_model(ndif_server.model_path, remote=True, host=ndif_server.url)
    one = loaded(score_proxies(one_model, proxies, CONFIG, tmp_path / "one.zarr", progress=False))
    seen = _counting(monkeypatch)
    for i in (0, 1):
        worker = load_run_model(ndif_server.model_path, remote=True, host=ndif_server.url)
        score_proxies(worker, proxies, CONFIG, tmp_path / "two.zarr", progress=False, shard=Shard(i, 2))
    assert seen == ["ex0", "ex2", "ex1"]
    assert one.attrs["ndif_server_versions"]["nnsight"]  # computed on the server
    xr.testing.assert_identical(one, loaded(open_scores(tmp_path / "two.zarr")))
