"""The work of `expc prune` in this fresh process, after its imports: seconds and peak RSS.

    python -m bench.prune_probe RUN_DIR OUT_DIR

Prints one JSON line `{"seconds": ..., "peak_mib": ...}`: the prune (25% of MLP neurons by
`channel_contribution`) timed from after expc's prune modules are imported, and the peak
RSS above the RSS at that point (`bench.rss_probe`'s high-water mark).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench.rss_probe import reset_peak, status_mib


def main() -> None:
    run, out = (Path(arg) for arg in sys.argv[1:3])
    from expc.runtime.prune.export import PruneRequest, prune

    reset_peak()
    start = status_mib("VmRSS")
    started = time.perf_counter()
    prune(PruneRequest(run=run, metric="channel_contribution", out=out, fraction=0.25))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_mib": status_mib("VmHWM") - start}))


if __name__ == "__main__":
    main()
