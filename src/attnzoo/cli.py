"""The ``attnzoo`` command: list, describe, show, bench, report, lra."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import torch

from attnzoo.registry import POSITIONS, build, compatibility, describe, list_mechanisms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnzoo", description="Self-attention and its efficient variants, side by side.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="every mechanism: family, paper, complexity, causal / mask support")

    desc = sub.add_parser("describe", help="a mechanism's paper, complexity, options and the positional encodings it honours")
    desc.add_argument("names", nargs="*", metavar="NAME", help="mechanisms to describe (none: only the compatibility table)")

    show = sub.add_parser("show", help="draw which (query, key) pairs a mechanism computes (several names: side by side)")
    show.add_argument("names", nargs="+", metavar="NAME")
    show.add_argument("--n", type=int, default=64, help="sequence length to draw (default 64)")
    show.add_argument("--heads", type=int, default=1)
    show.add_argument("--causal", action="store_true")
    show.add_argument("--out", type=Path, default=None, help="PNG path (default attnzoo-out/show-NAME.png; with --weights weights-NAME.png)")
    show.add_argument(
        "--cost", action="store_true", help="kernel mechanisms: multiply counts and measured times of (φQ φKᵀ)V against φQ(φKᵀV) at --n"
    )
    show.add_argument(
        "--weights", action="store_true",
        help="draw each mechanism's N×N weights on a probe where exact attention is a band (q = k = sinusoidal positions), beside the exact map",
    )
    show.add_argument("--head-dim", type=int, default=64, help="head dim d for --cost and --weights (default 64)")
    show.add_argument(
        "--opt", action="append", default=[], metavar="[NAME.]KEY=VALUE", help="mechanism option, repeatable (NAME. needed with several names)"
    )

    from attnzoo.bench.command import add_bench_arguments, add_report_arguments

    bench = sub.add_parser("bench", help="time, memory and error of every mechanism side by side; writes the report")
    add_bench_arguments(bench)
    report = sub.add_parser("report", help="rebuild the report (tables, plots, HTML) from the bench store; --json/--csv export")
    add_report_arguments(report)

    lra = sub.add_parser("lra", help="Long Range Arena: prepare the data offline, train, evaluate, report")
    lra_sub = lra.add_subparsers(dest="lra_command", required=True)
    prepare = lra_sub.add_parser("prepare", help="generate a task once and cache its splits (idempotent)")
    prepare.add_argument("task", help="listops, text, retrieval, image, pathfinder32, pathx")
    prepare.add_argument("--data", type=Path, default=None, help="data folder (default $ATTNZOO_DATA or attnzoo-out/lra)")
    prepare.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="task option, e.g. --opt train=1000")
    from attnzoo.lra.train import DEFAULT_STORE, add_train_arguments

    add_train_arguments(lra_sub.add_parser("train", help="train a mechanism on a task (checkpoints, --resume, torchrun for data parallel)"))
    evaluate = lra_sub.add_parser("eval", help="accuracy of a run's best (or last) checkpoint on a split")
    evaluate.add_argument("run", type=Path, help="the run's folder (attnzoo-out/lra/runs/<key>)")
    evaluate.add_argument("--split", default="test", choices=["train", "valid", "test"])
    evaluate.add_argument("--checkpoint", default="best", choices=["best", "last"])
    lra_report = lra_sub.add_parser("report", help="the LRA table beside the published numbers, and the bubble chart")
    lra_report.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"results store (default {DEFAULT_STORE})")
    lra_report.add_argument("--out", type=Path, default=Path("attnzoo-out/lra"), help="where the table and chart go")

    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print(list_table())
        elif args.command == "describe":
            for name in args.names:
                print(describe_text(name) + "\n")
            print(positions_table(args.names or None))
        elif args.command == "show":
            return show_command(args)
        elif args.command == "bench":
            from attnzoo.bench.command import bench_command

            return bench_command(args)
        elif args.command == "report":
            from attnzoo.bench.command import report_command

            return report_command(args)
        elif args.command == "lra":
            return lra_command(args)
    except ValueError as err:
        print(f"attnzoo: error: {err}", file=sys.stderr)
        return 2
    return 0


def lra_command(args) -> int:
    if args.lra_command == "prepare":
        from attnzoo.lra.prepare import prepare

        _, text = prepare(args.task, root=args.data, **parse_options(args.opt))
        print(text)
    elif args.lra_command == "train":
        from attnzoo.lra.train import config_from_args, train

        result = train(config_from_args(args), resume=args.resume, force=args.force)
        return 0 if result["status"] in ("done", "interrupted") else 1
    elif args.lra_command == "eval":
        from attnzoo.lra.train import evaluate_run

        print(evaluate_run(args.run, split=args.split, checkpoint=args.checkpoint))
    else:
        from attnzoo.lra.report import report

        print(report(args.store, args.out))
    return 0


def list_table() -> str:
    rows = [("name", "family", "causal", "mask", "complexity", "paper")]
    for name in list_mechanisms():
        d = describe(name)
        rows.append((name, d["family"], "yes" if d["causal"] else "no", "yes" if d["mask"] else "no", d["complexity"], d["paper"]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def describe_text(name: str) -> str:
    d = describe(name)
    yes = {True: "yes", False: "no"}
    options = ", ".join(f"{k}={v!r}" for k, v in d["options"].items()) or "none"
    return "\n".join([
        f"{name} ({d['family']}): {d['paper']}",
        f"  complexity: {d['complexity']}",
        f"  causal: {yes[d['causal']]}   padding mask: {yes[d['mask']]}   any length: {yes[d['variable_length']]}",
        f"  options: {options}",
        f"  positional encodings: {', '.join(d['positions'])}",
    ])


def positions_table(names: list[str] | None = None) -> str:
    """Which mechanism honours which positional encoding (registry.compatibility)."""
    table = compatibility()
    encodings = list(POSITIONS)
    rows = [["mechanism", *encodings]] + [[n, *("yes" if table[n][p] else "-" for p in encodings)] for n in (names or list(table))]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    legend = (
        "Positional encodings: sinusoidal, learned, floater and rnn are added to the embeddings once (every mechanism);\n"
        "rotary rotates q and k inside the layer (wherever q meets k, kernel methods included); relative adds to explicit\n"
        "q·k scores (only where those exist), alibi's −m·|i − j| also to the sparse kernel's blocked scores.\n"
        "build(name, ..., position='rotary') puts an in-layer one in."
    )
    return legend + "\n\n" + "\n".join(lines)


def parse_options(items: list[str]) -> dict:
    """['window=16', 'dilation=(1,2)'] -> {'window': 16, 'dilation': (1, 2)}."""
    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"option {item!r} must look like KEY=VALUE, e.g. --opt window=16")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def show_command(args) -> int:
    from attnzoo.viz.pattern import draw_patterns, terminal_grid

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    options = _show_options(args.opt, args.names)
    if args.cost and args.weights:
        raise ValueError("--cost and --weights draw different things; give one of them")
    if args.cost:
        return cost_command(args, options)
    if args.weights:
        return weights_command(args, options)
    panels = []
    for name in args.names:
        layer = build(name, dim=8 * args.heads, heads=args.heads, causal=args.causal, max_len=args.n, **options.get(name, {}))
        pairs = computed_pairs(layer, args.n)  # [H or 1, N', N']
        for h in range(pairs.shape[0]):
            title = name + (f" head {h}" if pairs.shape[0] > 1 else "")
            print(f"{title}: {int(pairs[h].sum())} of {pairs[h].numel()} (query, key) pairs computed")
            print(terminal_grid(pairs[h]))
            panels.append((title, pairs[h]))
    out = args.out or Path("attnzoo-out") / f"show-{'-'.join(args.names)}.png"
    print(f"wrote {draw_patterns(panels, out)}")
    return 0


def weights_command(args, options: dict) -> int:
    from attnzoo.viz.weights import draw_weights, exact_map, weight_panels

    if args.head_dim < 2:
        raise ValueError(f"--head-dim must be >= 2 (the probe has a sine and a cosine per frequency), got {args.head_dim}")
    layers = []
    with torch.random.fork_rng():
        for name in args.names:
            torch.manual_seed(0)  # the same picture every time for mechanisms with random parameters
            opts = options.get(name, {})
            label = name + "".join(f" {k}={v}" for k, v in sorted(opts.items()))
            layers.append((label, build(name, dim=args.head_dim * args.heads, heads=args.heads, causal=args.causal, max_len=args.n, **opts)))
    panels, no_map, failed = weight_panels(layers, args.n, args.head_dim)
    if failed:
        raise ValueError("--weights: " + "; ".join(failed))
    for label in no_map:
        print(f"{label}: no N×N weight map (it mixes positions without attention weights); not drawn")
    if not panels:
        raise ValueError(f"--weights: none of {args.names} has an N×N weight map; name an attention mechanism, synthesizer or gmlp")
    for label, _, error in panels:
        print(f"{label}: row error ½‖w − exact‖₁ = {error:.3f} (mean over queries)")
    out = args.out or Path("attnzoo-out") / f"weights-{'-'.join(args.names)}.png"
    print(f"wrote {draw_weights(panels, exact_map(args.n, args.head_dim, args.causal), out)}")
    return 0


def cost_command(args, options: dict) -> int:
    from attnzoo.kernel.core import FeatureCore
    from attnzoo.kernel.cost import format_cost, multiplication_order

    if args.head_dim < 1:
        raise ValueError(f"--head-dim must be >= 1, got {args.head_dim}")
    for name in args.names:
        layer = build(name, dim=args.head_dim, heads=1, **options.get(name, {}))
        if not isinstance(layer.core, FeatureCore):
            kernels = [n for n in list_mechanisms() if describe(n)["family"] == "kernel"]
            raise ValueError(f"--cost compares multiplication orders of kernel mechanisms ({', '.join(kernels)}); {name} is not one")
        print(format_cost(name, multiplication_order(args.n, layer.core.feature_dim(args.head_dim), args.head_dim)))
    return 0


def _show_options(items: list[str], names: list[str]) -> dict[str, dict]:
    """KEY=VALUE applies to the only name; NAME.KEY=VALUE to that name."""
    out: dict[str, dict] = {}
    for item in items:
        head, _, _ = item.partition("=")
        target, dot, key = head.partition(".")
        if dot and target in names:
            out.setdefault(target, {}).update(parse_options([item[len(target) + 1 :]]))
        elif len(names) == 1:
            out.setdefault(names[0], {}).update(parse_options([item]))
        else:
            raise ValueError(f"--opt {item!r}: with several names write NAME.KEY=VALUE, NAME one of {names}")
    return out


def computed_pairs(layer: torch.nn.Module, n: int) -> torch.Tensor:
    """Bool [H or 1, N, N] of the pairs a layer's core computes (a mixer is its own core)."""
    return getattr(layer, "core", layer).computed_pairs(n)


if __name__ == "__main__":
    sys.exit(main())
