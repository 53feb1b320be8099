"""Stores whole or not at all and checked on read: an interrupt at the store-creation instant (a
fault-injection checkpoint, not a sleep), SIGTERM like Ctrl-C, and every damaged chunk named."""

import shutil

import numpy as np
import pytest
import xarray as xr
from fixtures_models import save_tiny_llama

from nsneurons import cli, faults
from nsneurons.attribution import AttributionConfig
from nsneurons.scoring import score_proxies
from nsneurons.store import open_scores
from nsneurons.tasks.base import Proxy
from nsneurons.zarrio import StoreDamagedError, problems, write_atomically

CONFIG = AttributionConfig(target="ace", steps=2)
TEXT = "Question: review number {} was good\nOptions:\nA. positive\nB. negative\nC. neutral\nD. not sure\nAnswer:"


def _proxies(n_examples=2):
    return [
        Proxy(f"ex{e}", p, TEXT.format(e), ("positive", "negative", "neutral", "not sure"), (e + p) % 4, "sentiment")
        for e in range(n_examples)
        for p in range(3)
    ]


def _loaded(path):
    ds = xr.open_zarr(path, consolidated=False).load()
    ds.attrs.pop("created")
    return ds


@pytest.fixture
def fault(monkeypatch):
    """Interrupt at a named checkpoint (see nsneurons.faults): inject(at, action)."""

    def inject(at, action="interrupt"):
        faults.reset()
        monkeypatch.setenv("NSNEURONS_FAULT_AT", at)
        monkeypatch.setenv("NSNEURONS_FAULT_ACTION", action)

    yield inject
    faults.reset()


@pytest.fixture(scope="module")
def finished(tiny_llama, tmp_path_factory):
    path = tmp_path_factory.mktemp("finished") / "s.zarr"
    score_proxies(tiny_llama, _proxies(), CONFIG, path, progress=False)
    return path


@pytest.mark.parametrize("at", ["zarr.begun:s.zarr", "zarr.written:s.zarr"])
def test_an_interrupt_while_the_store_is_created_leaves_no_store_and_resumes(
    tiny_llama, finished, tmp_path, fault, monkeypatch, at
):
    fault(at)
    with pytest.raises(KeyboardInterrupt):
        score_proxies(tiny_llama, _proxies(), CONFIG, tmp_path / "s.zarr", progress=False)
    # Before: a half-written template at the final path, never resumable. Now: only the part store.
    assert not (tmp_path / "s.zarr").exists() and (tmp_path / "s.zarr.part").is_dir()
    monkeypatch.delenv("NSNEURONS_FAULT_AT")
    score_proxies(tiny_llama, _proxies(), CONFIG, tmp_path / "s.zarr", progress=False)
    assert not (tmp_path / "s.zarr.part").exists()
    xr.testing.assert_identical(_loaded(finished), _loaded(tmp_path / "s.zarr"))


def test_replacing_a_store_is_whole_or_not_at_all(tmp_path, fault):
    path = tmp_path / "x.zarr"
    write_atomically(path, xr.Dataset({"v": ("i", [1.0, 2.0])}))
    fault("zarr.set-aside:x.zarr")
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, xr.Dataset({"v": ("i", [3.0, 4.0])}))
    # Between the two renames: no store at the path (recomputed), the old and the new one whole beside it.
    assert not path.exists()
    assert xr.open_zarr(tmp_path / "x.zarr.old", consolidated=False).v.values.tolist() == [1.0, 2.0]
    assert xr.open_zarr(tmp_path / "x.zarr.part", consolidated=False).v.values.tolist() == [3.0, 4.0]
    faults.reset()
    write_atomically(path, xr.Dataset({"v": ("i", [5.0, 6.0])}))
    assert xr.open_zarr(path, consolidated=False).v.values.tolist() == [5.0, 6.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zarr"]


@pytest.mark.slow
@pytest.mark.parametrize("action, code, said", [("interrupt", 130, "interrupted"), ("term", 143, "terminated")])
def test_ctrl_c_and_sigterm_in_the_cli_say_resume_and_it_does(tmp_path, fault, monkeypatch, capsys, action, code, said):
    model = save_tiny_llama(tmp_path / "model")
    argv = [
        "score",
        "--model",
        str(model),
        "--device",
        "cpu",
        "--task",
        "sentiment",
        "--examples",
        "2",
        "--steps",
        "1",
        "--out",
        str(tmp_path / "s.zarr"),
    ]
    fault("zarr.written:s.zarr", action)  # the instant the issue found: the store being created
    assert cli.main(argv) == code
    assert capsys.readouterr().err.strip().endswith(f"{said}; rerun the same command to resume")
    monkeypatch.delenv("NSNEURONS_FAULT_AT")
    assert cli.main(argv) == 0
    assert open_scores(tmp_path / "s.zarr").done.values.tolist() == [True, True]
    assert not (tmp_path / "s.zarr.lock").exists()  # the lock goes with the run


def _delete(path):
    path.unlink()


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize(
    "variable, chunk, damage, what",
    [
        ("ig", "c/1/0/0/0", _delete, "is missing"),  # once read as NaN, and ig.sum("proxy") skips NaN
        ("activation", "c/0/0/0/0", _flip, "is damaged (ValueError: Stored and computed checksum do not match"),
        ("option_prob", "c/1/0/0", _truncate, "is damaged (ValueError: Stored and computed checksum do not match"),
    ],
)
def test_a_damaged_chunk_of_a_done_example_is_named(finished, tmp_path, capsys, variable, chunk, damage, what):
    store = tmp_path / "s.zarr"
    shutil.copytree(finished, store)
    assert cli.main(["check", str(store)]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 store(s)")
    damage(store / variable / chunk)
    line = f"{store}: variable {variable!r}: chunk {chunk} {what}"
    with pytest.raises(StoreDamagedError) as caught:
        open_scores(store)
    assert str(caught.value).startswith(f"damaged store: {line}")
    assert cli.main(["check", str(store)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(line)


def test_chunks_of_unfinished_examples_are_not_damage(finished, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(finished, store)
    ds = xr.open_zarr(store, consolidated=False)
    xr.Dataset({"done": ("example", np.array([True, False]))}).to_zarr(store, region={"example": slice(0, 2)}, consolidated=False)
    (store / "ig" / "c/1/0/0/0").unlink()  # example 1 is rewritten on resume: a missing chunk is expected
    assert problems(store) == []
    assert ds.sizes["example"] == 2
    from nsneurons.check import check_run

    assert check_run(store) == ([f"{store}: incomplete: 1 of 2 examples done; rerun the same command to resume"], 1)
