"""`expc run` names where its results went: the one results file, or a sharded run's index."""

from __future__ import annotations

import pytest

from expc.spec.run_format import RESULTS, RESULTS_INDEX
from tests.runtime.test_run_e2e import REPO, expc_cli, write_spec


def spec_text(out, shard_size: str) -> str:
    return f"""
experiment where {{
    model = "builtin:tiny-llama"
    data {{
        source = jsonl("{REPO / 'examples/data/prompts.jsonl'}", field = "text")
        batch_size = 4
        max_length = 16
    }}
    capture resid_out[*] {{ aggregate = full }}
    output {{ dir = "{out}"  shard_size = "{shard_size}" }}
}}
"""


@pytest.mark.parametrize(("shard_size", "stored"), [("20KB", RESULTS_INDEX), ("2GB", RESULTS)])
def test_the_complete_line_names_the_results_file_or_the_index(tmp_path, shard_size, stored):
    out = tmp_path / "run"
    spec = write_spec(tmp_path, spec_text(out, shard_size))
    done = expc_cli("run", str(spec))
    assert done.returncode == 0, done.stderr
    assert (out / stored).is_file()
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("complete: ")]
    assert line.endswith(f" tensors in {out / stored}")
