"""Is our Pathfinder-32 learnable from a CPU-sized sample? A plain CNN as a data check.

    python benchmarks/pathfinder_cnn_probe.py --level easy           # about 5 min here (1 to generate, 4 to train)
    python benchmarks/pathfinder_cnn_probe.py --level hard --epochs 8

The transformers of ``benchmarks/lra_cpu.py`` stay at chance on 256k Pathfinder-32 images (LRA's
schedule shows each model 16M). This probe asks the question underneath: does a small convolutional
network, whose locality suits tracing a contour, learn the same images from a sample of that size?
It trains a 6-conv VGG-style network on ``--train`` images of one difficulty (``pathfinder.LEVELS``),
generated with the project's own generator (cached under attnzoo-out/pathfinder-probe/), and writes
the validation accuracy after every epoch to benchmarks/results/pathfinder_cnn_probe.json (one entry
per level, replaced atomically; other levels' entries are kept).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attnzoo.bench.files import write_atomic
from attnzoo.lra.pathfinder import LEVELS, generate, pathfinder_config

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "pathfinder_cnn_probe.json"
CACHE = Path("attnzoo-out/pathfinder-probe")


def images(level: str, train: int, valid: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "valid"}: (uint8 [S, 32, 32], int64 [S]) at ``level``, generated once and cached."""
    path = CACHE / f"{level}-{train}-{valid}.npz"
    if path.exists():
        with np.load(path) as f:
            return {s: (f[f"{s}_x"], f[f"{s}_y"]) for s in ("train", "valid")}
    config = pathfinder_config(32, **LEVELS[level], train=train, valid=valid, test=0)
    start = time.perf_counter()
    data = generate(config, workers=2)
    print(f"generated {train + valid} {level} images in {time.perf_counter() - start:.0f} s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"{s}_{a}": data[s][i] for s in ("train", "valid") for i, a in enumerate("xy")})
    tmp.replace(path)
    return data


def cnn() -> nn.Sequential:
    """[B, 1, 32, 32] -> [B, 2]: three stages of two 3×3 conv + batch norm + ReLU (32, 64, 128 channels), each halving the image.

    Without batch norm this network stayed at the constant answer (training loss ln 2) for 6 epochs on easy images."""
    layers: list[nn.Module] = []
    channels = 1
    for width in (32, 64, 128):
        for c_in in (channels, width):
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
        channels = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 2))


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(_pixels(x[i : i + 500])).argmax(-1) == torch.from_numpy(y[i : i + 500])).sum()) for i in range(0, len(y), 500))
    model.train()
    return hits / len(y)


def _pixels(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).float().div_(255.0).unsqueeze(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", choices=list(LEVELS), default="easy")
    parser.add_argument("--train", type=int, default=20_000, help="training images (lra_cpu's cpu preset also draws from 20k)")
    parser.add_argument("--valid", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.train, args.valid, args.epochs, args.batch_size) < 1:
        parser.error("--train, --valid, --epochs and --batch-size must be positive")
    data = images(args.level, args.train, args.valid)
    (xt, yt), (xv, yv) = data["train"], data["valid"]
    torch.manual_seed(args.seed)
    model = cnn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    history, start = [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(yt), generator=generator).numpy()
        losses = []
        for i in range(0, len(order), args.batch_size):
            batch = order[i : i + args.batch_size]
            loss = nn.functional.cross_entropy(model(_pixels(xt[batch])), torch.from_numpy(yt[batch]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        history.append({"epoch": epoch, "images_seen": epoch * len(yt), "train_loss": float(np.mean(losses)),
                        "valid_accuracy": accuracy(model, xv, yv), "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(history[-1]), flush=True)
    results = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    results[args.level] = {
        "command": f"python benchmarks/pathfinder_cnn_probe.py --level {args.level} --train {args.train} --valid {args.valid} "
                   f"--epochs {args.epochs} --batch-size {args.batch_size} --lr {args.lr} --seed {args.seed}",
        "level": {**LEVELS[args.level]}, "model": "6 conv 3x3 + batch norm (32, 64, 128 channels) + MLP 256, AdamW",
        "parameters": sum(p.numel() for p in model.parameters()), "torch_threads": torch.get_num_threads(),
        "best_valid_accuracy": max(h["valid_accuracy"] for h in history), "history": history,
    }
    write_atomic(RESULT, json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
