"""``isotune train``: one training run from the command line (:mod:`workers.train`).

Prints the task, the initialization with its mean-field memory time ξ_C, and the learning curve as
a table; ``--json`` prints the whole result as one JSON object instead, ``--out`` also writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.theory import parse_sets

__all__ = ["parse_options", "train_cmd"]


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """Task options ``KEY=VALUE``; values are parsed as JSON when they can be (numbers, true)."""
    from workers.train import TrainError

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = (p.strip() for p in item.partition("="))
        if not sep or not key:
            raise TrainError("option", item, "expected KEY=VALUE, e.g. padding=noise")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def train_cmd(
    task: Annotated[
        str,
        typer.Option(
            "--task", help="copy, adding, padded_digits, mnist1d, padded_mnist or seq_cifar10."
        ),
    ] = "copy",
    T: Annotated[
        int,
        typer.Option("--T", help="Bridge length: steps between the information and its recall."),
    ] = 100,
    cell: Annotated[str, typer.Option("--cell", help="lstm, gru, minimalrnn or vanilla.")] = "lstm",
    init: Annotated[
        str,
        typer.Option(
            "--init",
            help="default (PyTorch's), critical (mean-field recipe for T), chrono (Tallec & "
            "Ollivier's keep-gate biases for T), or custom with --set.",
        ),
    ] = "critical",
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=VALUE",
            help="Initialization hyperparameter (mu, rho, sigma, nu, optionally with gate "
            "suffix); implies --init custom.",
        ),
    ] = None,
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="gaussian or orthogonal recurrent weights (critical and custom inits).",
        ),
    ] = "orthogonal",
    c: Annotated[
        float, typer.Option("--c", help="Trainability constant for --init critical: ξ_C = T/c.")
    ] = 1.0,
    hidden: Annotated[int, typer.Option("--hidden", help="Hidden units.")] = 128,
    optimizer: Annotated[str, typer.Option("--optimizer", help="adam, rmsprop or sgd.")] = "adam",
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = 64,
    steps: Annotated[int, typer.Option("--steps", help="Training steps.")] = 500,
    clip: Annotated[float, typer.Option("--clip", help="Gradient-norm clip (0: none).")] = 1.0,
    eval_every: Annotated[
        int,
        typer.Option("--eval-every", help="Steps between test evaluations (one curve row each)."),
    ] = 50,
    eval_size: Annotated[int, typer.Option("--eval-size", help="Test examples.")] = 512,
    seed: Annotated[int, typer.Option("--seed", help="Seed of weights, batches, test set.")] = 0,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")
    ] = "auto",
    threads: Annotated[
        int, typer.Option("--threads", help="CPU threads (0: torch's default).")
    ] = 0,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            metavar="KEY=VALUE",
            help="Task option, e.g. padding=noise, n_symbols=5, data_dir=/data.",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the JSON result to this file.")
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
    ] = True,
) -> None:
    """Train one gated RNN on a long-memory task and print its learning curve."""
    from workers.train import TrainConfig, TrainError, train

    params = parse_sets(sets)
    if params:
        if init not in ("critical", "custom"):
            raise TrainError("init", init, "--set gives custom hyperparameters; drop --init")
        init_value: Any = params
    elif init == "custom":
        raise TrainError("init", init, "custom needs hyperparameters with --set NAME=VALUE")
    else:
        init_value = init
    cfg = TrainConfig(
        task=task,
        T=T,
        cell=cell,
        hidden=hidden,
        init=init_value,
        weights=weights,
        c=c,
        optimizer=optimizer,
        lr=lr,
        batch_size=batch_size,
        steps=steps,
        clip=clip if clip > 0 else None,
        eval_every=eval_every,
        eval_size=eval_size,
        seed=seed,
        device=device,
        threads=threads or None,
        task_options=parse_options(option),
    )
    result = train(cfg, progress=progress and not json_out)
    payload = result.to_dict()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2) + "\n")
    if json_out:
        typer.echo(json.dumps(payload))
        return
    spec = result.task
    typer.echo(
        f"{cell} on {task}: T = {spec['T']} bridge steps, sequence length {spec['seq_len']}, "
        f"bridge inputs R = {spec['R']:.4g} ({spec['regime']})"
    )
    if result.init_params is None and init == "chrono":
        typer.echo("initialization: PyTorch default, chrono keep-gate biases log U[1, T - 1]")
    elif result.init_params is None:
        typer.echo("initialization: PyTorch default")
    else:
        shown = {k: v for k, v in result.init_params.items() if not k.startswith("rho") or v}
        typer.echo("initialization: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
        xi = result.xi_c
        typer.echo(
            f"mean-field memory time ξ_C = {xi:.4g} steps (T/ξ_C = {spec['T'] / xi:.3g})"
            if xi
            else "mean-field memory time: not available"
        )
    rows = [["step", "train loss", "test loss", "test accuracy", "seconds"]]
    rows += [
        [
            str(r["step"]),
            f"{r['train_loss']:.4g}",
            f"{r['test_loss']:.4g}",
            f"{r['test_accuracy']:.3f}",
            f"{r['seconds']:.1f}",
        ]
        for r in result.curve
    ]
    typer.echo(_table(rows))
    f = result.final
    typer.echo(
        f"final test accuracy {f['test_accuracy']:.3f} (best {f['best_test_accuracy']:.3f}, "
        f"chance {f['chance_accuracy']:.3f}); {result.stopped} after {f['steps']} steps, "
        f"{result.steps_per_second:.1f} steps/s on {result.device}"
    )
