"""The manifest records what the report needs to show tokens as text (`data.preview`) and the
device the run used (`model.device`), because the report reads only the run folder."""

from __future__ import annotations

import expc
from expc.runtime.data.preview import PREVIEW_SAMPLES

SPEC = """
experiment preview {
    model = "builtin:tiny-llama"
    device = cpu
    data { source = jsonl("examples/data/prompts.jsonl", field = "text")  batch_size = 4
           limit = 20  max_length = 16 }
    capture resid_out[0] { aggregate = mean }
}
"""


def test_manifest_records_device_and_decoded_first_samples(tmp_path):
    spec = tmp_path / "preview.exp"
    spec.write_text(SPEC, encoding="utf-8")
    expc.run(spec, out=tmp_path / "run")
    manifest = expc.open_run(tmp_path / "run").manifest
    assert manifest["model"]["device"] == "cpu"
    preview = manifest["data"]["preview"]
    assert len(preview["samples"]) == PREVIEW_SAMPLES
    first = preview["samples"][0]
    assert first["index"] == 0 and first["line"] == 1
    assert first["text"] == "The quick brown"[:15]  # bos + 15 bytes of the first line
    assert len(first["ids"]) == 16
    assert [preview["pieces"][str(i)] for i in first["ids"][:5]] == ["<bos>", "T", "h", "e", " "]
