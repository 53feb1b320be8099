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

from . import failures, vocab
from .cli_model import add_model_commands, add_placement_args, add_shard_arg, count, progress_bars
from .version import package_version


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the epilog's layout and shows every option's default."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage error as one `error:` line (exit 2) instead of the usage block."""

    def error(self, message):
        self.exit(failures.EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def cmd_check(args) -> int:
    from .check import check_recipe, check_run

    if args.run_dir.suffix in (".yaml", ".yml") and not args.run_dir.is_dir():
        lines, problems = check_recipe(args.run_dir, remote=args.remote)
        print("\n".join(lines + problems))
        return 1 if problems else 0
    if args.remote:
        raise ValueError(f"{args.run_dir}: --remote checks a recipe (RECIPE.yaml) against NDIF, not a run folder")
    found, n_stores = check_run(args.run_dir)
    for line in found:
        print(line)
    if found:
        return 1
    print(f"ok: {n_stores} store(s) in {args.run_dir} whole and complete")
    return 0


def cmd_run(args):
    import dataclasses

    from .recipe import RecipeError, load_recipe

    # --device-map / --max-memory are the recipe keys, set as --set would (JSON is YAML), checked alike.
    placing = [
        f"{key}={json.dumps(value)}" for key, value in (("device_map", args.device_map), ("max_memory", args.max_memory)) if value
    ]
    recipe = load_recipe(
        args.recipe, [*args.set, *placing]
    )  # before the heavy imports: a bad recipe is refused in a fraction of a second
    from .runners import naica, neuronllm

    run_recipe = {"neuronllm": neuronllm.run_recipe, "naica": naica.run_recipe}[recipe.experiment]
    if args.remote:
        recipe = dataclasses.replace(recipe, backend="remote")
    if args.output:
        recipe = dataclasses.replace(recipe, output=args.output)
    if args.shard is not None:
        if recipe.experiment != "neuronllm":
            raise RecipeError(f"--shard: only experiment 'neuronllm' runs in shards, this recipe is {recipe.experiment!r}")
        out = neuronllm.run_recipe(recipe, progress=progress_bars(args), shard=args.shard)
        print(f"scores in {out}")
        return
    out = run_recipe(recipe, progress=progress_bars(args))
    print(f"outputs in {out}")


def cmd_plan(args):
    from .plan import plan_command

    print(
        plan_command(
            args.recipe,
            args.set,
            remote=args.remote,
            measure=args.measure,
            crosstask=args.crosstask,
            as_json=args.json,
            prompt_tokens=args.prompt_tokens,
        )
    )


def cmd_crosstask(args):
    import dataclasses

    from .crosstask import load_crosstask_recipe
    from .runners.crosstask import run_crosstask

    recipe, _ = load_crosstask_recipe(args.recipe, args.set)  # checks the `crosstask:` section; run_crosstask reads it
    if args.remote:
        recipe = dataclasses.replace(recipe, backend="remote")
    if args.output:
        recipe = dataclasses.replace(recipe, output=args.output)
    print(f"cross-task report: {run_crosstask(recipe, progress=progress_bars(args))}")


def cmd_export(args):
    from .export import export_run

    print(f"wrote {export_run(args.run_dir, args.format, args.out)}")


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
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, validated like the YAML (repeatable), e.g. --set selection.k=50",
    )
    add_shard_arg(p)
    add_placement_args(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser(
        "crosstask",
        help="cross-task analyses (common/task-specific neurons, cross-task matrix, layers, budget K) after `nsneurons run`",
    )
    p.add_argument("recipe", type=Path)
    p.add_argument("--remote", action="store_true", help="run on NDIF instead of locally")
    p.add_argument("--output", default=None, help="output root (default: the recipe's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    p.set_defaults(func=cmd_crosstask)
    p = sub.add_parser(
        "check",
        help="verify a run folder (or one .zarr store): every chunk present and passing its checksum, every output there; "
        "or a recipe (.yaml), with --remote against NDIF (model served, server versions, dtype)",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR_OR_RECIPE")
    p.add_argument("--remote", action="store_true", help="with a recipe: the NDIF preflight too")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser(
        "export", help="the good and bad neurons of every method and task, with provenance, as one CSV/JSON/Parquet file"
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", default="csv", choices=vocab.choices(vocab.ExportFormat))
    p.add_argument("--out", type=Path, default=None, help="output file (default: RUN_DIR/neurons.FORMAT)")
    p.set_defaults(func=cmd_export)


def _add_plan_command(sub) -> None:
    p = sub.add_parser("plan", help="before a run: passes, peak memory, NDIF download and time of every stage of a recipe")
    p.add_argument("recipe", type=Path)
    for flag, text in (
        ("--measure", "load the model, time one IG proxy and one intervention call, and calibrate"),
        ("--crosstask", "also plan `nsneurons crosstask`"),
        ("--remote", "plan the run on NDIF"),
        ("--json", "one JSON object"),
    ):
        p.add_argument(flag, action="store_true", help=text)
    p.add_argument("--prompt-tokens", type=count(2), default=None, help="do not read the data: assume prompts this long")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    p.set_defaults(func=cmd_plan)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nsneurons",
        description="Good and bad neurons of a language model for a whole task.",
        epilog=failures.EPILOG,
        formatter_class=_Help,
    )
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument(
        "-v",
        "--verbose",
        action="store_const",
        const=1,
        dest="verbosity",
        default=argparse.SUPPRESS,
        help="also show info messages (e.g. skipped data rows)",
    )
    loud.add_argument(
        "-q",
        "--quiet",
        action="store_const",
        const=-1,
        dest="verbosity",
        default=argparse.SUPPRESS,
        help="errors only, no progress bars",
    )
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error (also NSNEURONS_DEBUG=1)")
    parser.add_argument("--version", action="version", version=f"nsneurons {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_model_commands(sub)
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
