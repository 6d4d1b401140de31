"""One layer's forward+backward time, for A/B comparisons of two checkouts in fresh processes.

    git worktree add /tmp/old COMMIT
    for rep in 1 2; do
      python benchmarks/layer_ab.py routing 16384 1                         # this checkout
      PYTHONPATH=/tmp/old/src python benchmarks/layer_ab.py routing 16384 1 # the old one
    done

Arguments: mechanism, N, causal (0/1). Layer x [1, N, 256], 4 heads, 2 threads, float32; routing
with the paper's √N clusters. Prints one JSON line: which source tree ran, and the median of 5
timed steps after 2 warm-ups, in ms. Alternate the two trees and compare medians: this machine is
shared, so only ratios from one sitting mean anything.
"""

import json
import statistics
import sys
import time

import torch

import attnzoo
from attnzoo.clustered.routing import paper_clusters

torch.set_num_threads(2)
name, n, causal = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
opts = {"clusters": paper_clusters(n)} if name == "routing" else {}
torch.manual_seed(0)
layer = attnzoo.build(name, dim=256, heads=4, causal=causal, **opts)
x = torch.randn(1, n, 256, requires_grad=True)
times = []
for _ in range(7):
    start = time.perf_counter()
    layer(x).sum().backward()
    times.append(time.perf_counter() - start)
print(json.dumps({"src": attnzoo.__file__.split("/src/")[0], "name": name, "n": n, "causal": causal,
                  "ms": round(statistics.median(times[2:]) * 1000, 1)}))
