"""A run whose results are 10x the memory it may grow by completes, and reads back.

The child process does a small warm-up run (imports, model, first allocations), then caps
its data segment (`RLIMIT_DATA`, which counts heap and private mappings: torch's CPU tensors
too; `RLIMIT_AS` would count the address space torch reserves and never uses) at what it
holds plus `HEADROOM`, and runs a `full` capture of every layer whose results are more than
10x `HEADROOM`. With rows kept until the end that run would need them all at once; with
shards it completes. The report then builds from the shards, uncapped: it reads slices of
`CHUNK_ELEMENTS` values (report/run_folder.py), several times that with its temporaries.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from expc.report.run_folder import open_run_folder
from tests.runtime.test_run_e2e import REPO

HEADROOM = 32_000_000
CHILD = textwrap.dedent('''
    import re, resource, sys
    from pathlib import Path
    import expc
    from expc.report.build import write_report

    folder, headroom = Path(sys.argv[1]), int(sys.argv[2])
    (folder / "data.txt").write_text("".join(f"sample {i} " + "abcdefghij" * 30 + "\\n"
                                             for i in range(440)))

    def spec(name, limit, shard_size):
        path = folder / f"{name}.exp"
        path.write_text(f"""experiment mem {{
            model = "builtin:tiny-llama"
            data {{ source = text("{folder / 'data.txt'}")  limit = {limit}
                    max_length = 256  batch_size = 8 }}
            capture resid_out[*] {{ aggregate = full }}
            capture mlp_post[*] {{ aggregate = full }}
            output {{ dir = "{folder / name}"  shard_size = "{shard_size}" }}
        }}""")
        return path

    def data_bytes():
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmData:\\s+(\\d+) kB", status).group(1)) * 1024

    expc.run(spec("warm", 16, "100KB"))
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    resource.setrlimit(resource.RLIMIT_DATA, (data_bytes() + headroom, hard))
    results = expc.run(spec("big", 10**9, "4MB"))
    print("keys", len(results))  # lazy: reading a key would load its rows
    resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))  # the report slices by its own size
    write_report(folder / "big")
''')


@pytest.mark.slow
def test_results_ten_times_the_memory_limit_stream_to_shards(tmp_path):
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(HEADROOM)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "keys 18" in done.stdout, done.stdout
    big = tmp_path / "big"
    assert open_run_folder(big).layout["capture/resid_out_3"][0][0] == 440
    written = sum(p.stat().st_size for p in big.glob("results-*-of-*.safetensors"))
    assert written >= 10 * HEADROOM, written
    assert (big / "report.html").is_file()
