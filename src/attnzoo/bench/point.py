"""Entry point for one measurement in a fresh process: python -m attnzoo.bench.point '<Point as JSON>'."""

import json
import sys

from attnzoo.bench.harness import Point, measure

if __name__ == "__main__":
    print(json.dumps(measure(Point(**json.loads(sys.argv[1])))))
