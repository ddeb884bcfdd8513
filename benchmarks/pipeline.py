"""The whole pipeline against its ceiling and a Faust pass-through: ``streamcrm bench``.

Run ``python benchmarks/pipeline.py [--customers 100000] [--days 14] [--json bench.json]``;
every option of ``streamcrm bench`` applies (see ``docs/performance.md``).
"""

from __future__ import annotations

import sys

from streamcrm.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
