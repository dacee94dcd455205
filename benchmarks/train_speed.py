"""Training-step speed of isotune's models against bare PyTorch loops of the same shapes.

1. ``SeqModel("lstm")`` initialized from the theory (critical init) against a bare
   ``nn.LSTM`` + ``nn.Linear`` with PyTorch's default init: the initialization must not cost speed
   (target: within 10%).
2. Our ``minimalrnn`` (a Python time loop) against ``nn.GRU`` (fused kernel): target ≤ 2× per step.
3. On the CPU, an untrainable run (PyTorch's default LSTM initialization on padded digits with a
   200-step noise bridge, whose vanishing signals fill the backward pass with denormal floats)
   through :func:`workers.train.train` with denormals flushed to zero (the training loop's
   setting) against without: seconds per run, median over alternating repeats, and whether the
   learning curves agree.

A step is forward, cross-entropy on the last output, backward and an Adam update, on random data.
The two sides of each comparison alternate step by step so that drift of the machine's speed hits
both alike; the report quotes medians and their ratio.

Usage: python benchmarks/train_speed.py [--T 100] [--hidden 128] [--batch 128] [--steps 30]
[--device auto] [--threads 1]. Writes benchmarks/results/train_speed_<device>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from meanfield import Inputs
from workers.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"


class Bare(nn.Module):
    """A bare recurrent core + readout, PyTorch's default initialization."""

    def __init__(self, kind: str, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.core = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](n_in, hidden)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.core(x)
        return self.head(out[-1:])


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> float:
        t0 = time.perf_counter()
        out = model(x)
        loss = nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return step


def compare(a, b, steps: int, warmup: int = 3) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for i in range(steps):
        if i % 2:
            tb.append(b())
            ta.append(a())
        else:
            ta.append(a())
            tb.append(b())
    return ta, tb


def denormals(repeats: int, steps: int = 300) -> dict | None:
    """Section 3 of the module docstring; None with ``repeats`` 0."""
    if repeats < 1:
        return None
    import workers.train as training

    cfg = training.TrainConfig(
        task="padded_digits", T=200, cell="lstm", hidden=64, init="default", batch_size=32,
        steps=steps, eval_every=max(1, steps // 3), lr=3e-3, seed=0, device="cpu",
        threads=torch.get_num_threads(), task_options={"padding": "noise"},
    )  # fmt: skip
    times: dict[bool, list[float]] = {True: [], False: []}
    curves: dict[bool, list[float]] = {}
    try:
        for i in range(2 * repeats):
            flush = bool(i % 2)
            training.FLUSH_DENORMAL = flush
            res = training.train(cfg)
            times[flush].append(res.seconds)
            curves[flush] = [row["test_loss"] for row in res.curve]
    finally:
        training.FLUSH_DENORMAL = True
    flush_s, keep_s = statistics.median(times[True]), statistics.median(times[False])
    diff = max(abs(a - b) for a, b in zip(curves[True], curves[False], strict=True))
    print(
        f"denormals: flushed {flush_s:.1f} s, kept {keep_s:.1f} s per run; curves differ {diff:.2g}"
    )
    return {
        "run": f"LSTM, default init, padded digits, T = 200, hidden 64, batch 32, {steps} steps",
        "repeats": repeats,
        "flush_s": flush_s,
        "keep_s": keep_s,
        "speedup": keep_s / flush_s,
        "max_loss_diff": diff,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--inputs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--denormal-repeats", type=int, default=2, help="0: skip the denormal run")
    ap.add_argument("--denormal-steps", type=int, default=300)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    torch.manual_seed(0)
    x = torch.randn(args.T, args.batch, args.inputs, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    inputs = Inputs(R=1.0, regime="independent")
    rows = []
    for ours, bare_kind, label, target in (
        ("lstm", "lstm", "LSTM, critical init vs bare nn.LSTM", 1.10),
        ("minimalrnn", "gru", "minimalRNN vs nn.GRU", 2.0),
    ):
        model, _ = build_model(
            ours, args.inputs, args.hidden, 10, init="critical", T=args.T, inputs=inputs, seed=0
        )
        model.to(dev)
        bare = Bare(bare_kind, args.inputs, args.hidden, 10).to(dev)
        ta, tb = compare(step_fn(model, x, y, dev), step_fn(bare, x, y, dev), args.steps)
        ma, mb = statistics.median(ta), statistics.median(tb)
        rows.append(
            {
                "comparison": label,
                "ours_ms": 1e3 * ma,
                "baseline_ms": 1e3 * mb,
                "ratio": ma / mb,
                "target_ratio": target,
                "met": ma / mb <= target,
            }
        )
        print(f"{label}: {1e3 * ma:.1f} ms vs {1e3 * mb:.1f} ms per step, ratio {ma / mb:.3f}")
    denormal = denormals(args.denormal_repeats, args.denormal_steps) if dev.type == "cpu" else None
    if dev.type == "cuda":
        machine = torch.cuda.get_device_name(dev)
    else:
        machine = f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads"
    report = {
        "device": str(dev),
        "machine": machine,
        "torch": torch.__version__,
        "shape": {"T": args.T, "hidden": args.hidden, "batch": args.batch, "inputs": args.inputs},
        "steps": args.steps,
        "rows": rows,
        "denormal": denormal,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"train_speed_{dev.type}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Training-step speed ({dev.type})",
        "",
        f"Written by `python benchmarks/train_speed.py` on {machine}, torch {torch.__version__}.",
        f"T = {args.T}, hidden {args.hidden}, batch {args.batch}, {args.inputs} inputs; forward,",
        f"loss, backward and Adam step; median of {args.steps} steps per side, sides alternating.",
        "",
        "| comparison | ours (ms/step) | baseline (ms/step) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = "met" if r["met"] else "MISSED"
        lines.append(
            f"| {r['comparison']} | {r['ours_ms']:.1f} | {r['baseline_ms']:.1f} | "
            f"{r['ratio']:.3f} | ≤ {r['target_ratio']:g}: {verdict} |"
        )
    if denormal:
        d = denormal
        lines += [
            "",
            f"Untrainable run ({d['run']}), denormal floats flushed to zero against kept: "
            f"{d['flush_s']:.1f} s against {d['keep_s']:.1f} s per run (median of "
            f"{d['repeats']} each, alternating), **{d['speedup']:.1f}× faster**; largest "
            f"difference between the two learning curves (test loss): {d['max_loss_diff']:.2g}.",
        ]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / stem}.md")


if __name__ == "__main__":
    main()
