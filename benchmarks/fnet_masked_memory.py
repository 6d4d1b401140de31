"""Peak memory of FNet's padded (masked) path over many ListOps-like batches, in a fresh process.

    python benchmarks/fnet_masked_memory.py                               # this checkout
    PYTHONPATH=/tmp/old/src python benchmarks/fnet_masked_memory.py --label old   # another (git worktree)

150 steps of two stacked ``fnet_mix`` calls, forward and backward, on x [32, N, 64] with N a random
multiple of 64 in 512..1,984 and every sequence's real length drawn from the last 64 positions (the
shape of a trimmed ListOps batch: a few dozen distinct lengths each). One thread. Prints and appends
{label, src, start / end / peak RSS in MiB} to benchmarks/results/fnet_masked_memory.json.
"""

import argparse
import json
import resource
from pathlib import Path

import torch

import attnzoo
from attnzoo.bench.files import write_atomic
from attnzoo.mixing.fnet import fnet_mix

RESULT = Path(__file__).resolve().parent / "results" / "fnet_masked_memory.json"


def rss_mib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    start = rss_mib()
    for _ in range(args.steps):
        n = 64 * int(torch.randint(8, 32, (1,), generator=generator))
        lengths = torch.randint(n - 63, n + 1, (32,), generator=generator)
        mask = torch.arange(n)[None] < lengths[:, None]
        x = torch.randn(32, n, 64, requires_grad=True, generator=generator)
        fnet_mix(fnet_mix(x, mask=mask), mask=mask).sum().backward()
    row = {"label": args.label, "src": attnzoo.__file__.split("/src/")[0], "steps": args.steps, "start_rss_mib": start,
           "end_rss_mib": rss_mib(), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    print(json.dumps(row))
    rows = json.loads(RESULT.read_text())["rows"] if RESULT.exists() else []
    write_atomic(RESULT, json.dumps({"command": "python benchmarks/fnet_masked_memory.py [--label L]", "rows": rows + [row]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
