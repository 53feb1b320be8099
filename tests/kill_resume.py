"""Kill `nsneurons run` and `nsneurons score` at many instants, resume, compare with an uninterrupted run.

    python tests/kill_resume.py                     # every checkpoint of both commands (>= 30 each)
    python tests/kill_resume.py --small --points 2  # fewer examples; first, last and store creation (CI)

The instants are the fault-injection checkpoints of nsneurons.faults: every write that matters for
resuming (a store begun, written, renamed; an example's arrays, its done flag). Each trial runs the
command in a forked child (torch is imported once, by this process) that is stopped at its N-th
checkpoint by SIGKILL, Ctrl-C or SIGTERM in turn, checks that the folder holds no damage, reruns the
command to the end and asserts that every store equals the uninterrupted run's
(xarray.testing.assert_identical, the `created` timestamps aside), with the same files and report.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import xarray as xr
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ACTIONS = ("kill", "interrupt", "term")
EXPECTED_EXIT = {"kill": -9, "interrupt": 130, "term": 143}
# Small enough to run in seconds, large enough to have every stage: two targets (two stores).
# With 3 identification examples `run` has 35 checkpoints; `score` of 14 examples has 31.
RUN_RECIPE = {
    "name": "kill",
    "device": "cpu",
    "tasks": ["sentiment"],
    "identification_examples": 3,
    "attribution": {"steps": 1},
    "selection": {"methods": ["neuronllm", "tn"], "k": 5, "z": 20},
    "evaluation": {"understood": 2, "not_understood": 2, "candidates": 6, "ratios": [0.5, 1.0]},
}
SCORE_EXAMPLES = 14


def in_child(argv: list[str], env: dict, log: Path) -> int:
    """`nsneurons ARGV` in a forked child with `env` added; its exit code, or -signal if killed."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 99
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1), os.dup2(fd, 2)
            os.environ.update(env)
            from nsneurons import cli

            code = cli.main(argv)
        except BaseException:  # noqa: BLE001 - reported through the log and the exit code
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def make_model(folder: Path) -> None:
    """A 2-layer random LLaMA saved with save_pretrained (built in a child: torch computes only there)."""
    pid = os.fork()
    if pid == 0:
        try:
            sys.path.insert(0, str(HERE))
            from fixtures_models import llama_style_tokenizer, tiny_hf_model

            tok = llama_style_tokenizer()
            tiny_hf_model("llama", layers=2, vocab_size=len(tok)).save_pretrained(folder)
            tok.save_pretrained(folder)
        finally:
            os._exit(0 if (folder / "config.json").is_file() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "could not build the tiny model"


def outputs(folder: Path) -> dict[str, xr.Dataset]:
    found = {}
    for path in sorted(folder.rglob("*.zarr")):
        ds = xr.open_zarr(path, consolidated=False).load()
        ds.attrs.pop("created", None)
        found[str(path.relative_to(folder))] = ds
    return found


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def same_outputs(reference: Path, resumed: Path) -> None:
    assert files(reference) == files(resumed), sorted(set(files(reference)) ^ set(files(resumed)))
    first, second = outputs(reference), outputs(resumed)
    for name in first:
        xr.testing.assert_identical(first[name], second[name])
    for report in reference.rglob("report.md"):
        assert report.read_text() == (resumed / report.relative_to(reference)).read_text()


class Command:
    """One command to torture: its argv for an output folder, and where that output lands."""

    def __init__(self, name: str, work: Path, model: Path, small: bool = False):
        self.name, self.work, self.model, self.small = name, work, model, small

    def checked(self, out: Path) -> Path:
        """What `nsneurons check` is given: the run folder, or the scores store."""
        return out / ("scores.zarr" if self.name == "score" else RUN_RECIPE["name"])

    def argv(self, out: Path) -> list[str]:
        if self.name == "score":
            return [
                "score",
                "--model",
                str(self.model),
                "--device",
                "cpu",
                "--task",
                "sentiment",
                "--examples",
                str(2 if self.small else SCORE_EXAMPLES),
                "--steps",
                "1",
                "--out",
                str(out / "scores.zarr"),
            ]
        recipe = out.parent / f"{out.name}.yaml"
        settings = (
            {**RUN_RECIPE, "identification_examples": 2, "selection": {**RUN_RECIPE["selection"], "methods": ["neuronllm"]}}
            if self.small
            else RUN_RECIPE
        )
        recipe.write_text(yaml.safe_dump({**settings, "model": str(self.model), "output": str(out)}))
        return ["run", str(recipe)]


def spread(n_points: int, total: int, creation: list[int]) -> list[int]:
    """`n_points` checkpoint numbers spread over 1..total, always with the store-creation instants."""
    if n_points >= total:
        return list(range(1, total + 1))
    even = {round(1 + i * (total - 1) / max(1, n_points - 1)) for i in range(n_points)}
    return sorted(set(creation) | even)


def torture(cmd: Command, n_points: int) -> dict:
    started = time.time()
    env = {"TOKENIZERS_PARALLELISM": "false", "NSNEURONS_CACHE": str(cmd.work / "cache")}
    reference = cmd.work / f"{cmd.name}-reference"
    checkpoints = cmd.work / f"{cmd.name}-checkpoints.txt"
    code = in_child(cmd.argv(reference), {**env, "NSNEURONS_FAULT_LOG": str(checkpoints)}, cmd.work / f"{cmd.name}-reference.log")
    assert code == 0, (cmd.work / f"{cmd.name}-reference.log").read_text()
    names = checkpoints.read_text().split()
    # The first stores either command writes are scores stores: their creation instants are always tried.
    creation = [i + 1 for i, n in enumerate(names) if n.startswith(("zarr.begun:", "zarr.written:"))][:2]
    points = spread(n_points, len(names), creation)
    from nsneurons.check import check_run

    for i, at in enumerate(points):
        action = ACTIONS[i % len(ACTIONS)]
        out, log = cmd.work / f"{cmd.name}-at-{at}", cmd.work / f"{cmd.name}-at-{at}.log"
        code = in_child(cmd.argv(out), {**env, "NSNEURONS_FAULT_AT": str(at), "NSNEURONS_FAULT_ACTION": action}, log)
        assert code == EXPECTED_EXIT[action], (
            f"{cmd.name} at checkpoint {at} ({names[at - 1]}, {action}): exit {code}\n{log.read_text()}"
        )
        if action != "kill":
            assert "rerun the same command to resume" in log.read_text(), log.read_text()
        if cmd.checked(out).exists():  # nothing damaged: at most unfinished work
            found, _ = check_run(cmd.checked(out))
            damage = [f for f in found if "incomplete" not in f and "has not finished" not in f]
            assert not damage, f"{cmd.name} at checkpoint {at} ({names[at - 1]}): {damage}"
        code = in_child(cmd.argv(out), env, log)
        assert code == 0, (
            f"{cmd.name}: resume after checkpoint {at} ({names[at - 1]}, {action}) failed: exit {code}\n{log.read_text()}"
        )
        same_outputs(reference, out)
        print(
            f"  {cmd.name}: killed at checkpoint {at:>2}/{len(names)} {names[at - 1]:<45} ({action:<9}) -> resumed, identical",
            flush=True,
        )
        shutil.rmtree(out)
    return {"command": cmd.name, "checkpoints": len(names), "points": len(points), "seconds": time.time() - started}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=None, help="kill points per command (default: every checkpoint)")
    parser.add_argument("--commands", default="run,score", help="comma-separated: run, score")
    parser.add_argument("--small", action="store_true", help="fewer examples (fewer checkpoints): for CI")
    parser.add_argument("--workdir", type=Path, default=None, help="where to work (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nsneurons-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    # Imported once here, so that each forked child starts at once (and runs the code as it was at start).
    import nsneurons.check  # noqa: F401
    import nsneurons.cli  # noqa: F401
    import nsneurons.models  # noqa: F401
    import nsneurons.report  # noqa: F401
    import nsneurons.runners.naica  # noqa: F401
    import nsneurons.runners.neuronllm  # noqa: F401
    import nsneurons.scoring  # noqa: F401
    import nsneurons.tasks.loading  # noqa: F401

    started = time.time()
    try:
        make_model(work / "model")
        results = [
            torture(Command(name, work, work / "model", args.small), args.points or 10**6) for name in args.commands.split(",")
        ]
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    for r in results:
        print(
            f"{r['command']}: {r['points']} of {r['checkpoints']} checkpoints killed and resumed, every output identical ({r['seconds']:.0f} s)"
        )
    print(f"total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
