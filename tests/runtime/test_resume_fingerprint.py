"""Resume only resumes the same work (issue 12, item 4): runtime/fingerprint.py and its use
by `expc run --resume`; a re-run keyed on the canonical IR, not the spec's text."""

from __future__ import annotations

import json
import os

import pytest

from expc.runtime.execute import RunRequest, run
from expc.runtime.fingerprint import (changed_parts, experiment_digest, model_digest,
                                      run_fingerprint)
from expc.spec import ir
from expc.spec import load as load_spec
from expc.spec.diagnostics import DiagnosticError

BASE = """
experiment base {{
    model = "builtin:tiny-llama"
    data {{ source = jsonl("{data}", field = "text")  batch_size = 1  max_length = 16 }}
    capture resid_out[0] {{ aggregate = mean }}
    output {{ dir = "{out}"  checkpoint_every = 1 }}
}}
"""
MAIN = 'include "base.exp"\nexperiment e extends base { seed = 0 }\n'
TEXTS = ["the cat sat", "a dog ran far", "birds sing", "fish swim deep"]


@pytest.fixture
def spec(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    (tmp_path / "base.exp").write_text(BASE.format(data=data, out=tmp_path / "run"))
    (tmp_path / "main.exp").write_text(MAIN)
    return tmp_path / "main.exp"


def run_spec(spec, **kwargs):
    return run(RunRequest(spec_path=spec, quiet=True, **kwargs))


def resume_error(spec) -> str:
    with pytest.raises(DiagnosticError) as excinfo:
        run_spec(spec, resume=True)
    (diag,) = excinfo.value.diagnostics
    return f"{diag.span.path}: {diag.message}"


def test_editing_the_data_with_the_same_counts_blocks_resume(spec):
    # A complete run with checkpoint_every = 1 keeps the checkpoint after batch 3 of 4.
    run_spec(spec)
    data = spec.parent / "data.jsonl"
    data.write_text(data.read_text().replace("cat", "rat"))  # same samples, same tokens
    message = resume_error(spec)
    assert message.startswith(str(spec.parent / "run" / "checkpoint" / "rank0-cursor.json"))
    assert message.endswith("data changed since it was written")


def test_an_unchanged_setup_resumes(spec):
    run_spec(spec)
    assert run_spec(spec, resume=True).metadata["run_dir"] == str(spec.parent / "run")


def test_editing_an_included_file_blocks_resume(spec):
    run_spec(spec)
    base = spec.parent / "base.exp"
    base.write_text(base.read_text().replace("max_length = 16", "max_length = 15"))
    assert "another spec" in resume_error(spec)


def test_comments_and_layout_do_not_make_another_spec(spec):
    run_spec(spec)
    spec.write_text("# reformatted\n" + MAIN.replace("{ seed = 0 }", "{\n    seed = 0\n}"))
    run_spec(spec)  # no --force needed
    manifest = json.loads((spec.parent / "run" / "manifest.json").read_text())
    assert manifest["spec"]["text"].startswith("# reformatted")


def test_experiment_digest_ignores_form_path_and_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("d.txt", "e.txt"):
        (tmp_path / name).write_text("hello\n")
    one = tmp_path / "one.exp"
    one.write_text('experiment x { model = "builtin:tiny-llama"  data { source = '
                   'text("d.txt") }  output { dir = "a" } }\n')
    two = tmp_path / "sub" / "two.exp"
    two.parent.mkdir()
    two.write_text('# comment\nexperiment x {\n  model = "builtin:tiny-llama"\n'
                   '  data { source = text("d.txt") }\n  output { dir = "b"  '
                   'checkpoint_every = 3 }\n}\n')
    assert experiment_digest(load_spec(one)) == experiment_digest(load_spec(two))
    two.write_text(two.read_text().replace('"d.txt"', '"e.txt"'))
    assert experiment_digest(load_spec(one)) != experiment_digest(load_spec(two))


def test_model_digest_sees_configs_and_rewritten_weights(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    weights = folder / "model.safetensors"
    weights.write_bytes(b"w" * 100)
    ref = ir.ModelRef(path=str(folder))
    first = model_digest(ref)
    (folder / ".DS_Store").write_text("noise")
    (folder / "sub").mkdir()
    (folder / "sub" / "x.json").write_text("{}")
    assert model_digest(ref) == first  # only top-level, non-hidden files are loaded
    stat = weights.stat()
    weights.write_bytes(b"v" * 100)  # same size, rewritten
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    second = model_digest(ref)
    assert second != first
    (folder / "config.json").write_text('{"model_type": "llama", "rope_theta": 1}')
    assert model_digest(ref) != second


def test_run_fingerprint_and_changed_parts(spec):
    experiment = load_spec(spec)
    one, two = (run_fingerprint(experiment, world_size=n) for n in (1, 2))
    assert list(one) == ["experiment", "data", "model", "sources", "versions", "processes"]
    assert changed_parts(one, two) == ["processes"]
    assert changed_parts("old/string/fingerprint", one) == list(one)


def test_an_unreadable_data_file_is_a_diagnostic_naming_it(tmp_path):
    (tmp_path / "gone").write_text("hello\n")
    experiment = load_spec_text(tmp_path, 'experiment x { model = "builtin:tiny-llama"  '
                                          f'data {{ source = text("{tmp_path / "gone"}") }} }}\n')
    (tmp_path / "gone").unlink()
    with pytest.raises(DiagnosticError) as excinfo:
        run_fingerprint(experiment, world_size=1)
    assert excinfo.value.diagnostics[0].span.path == str(tmp_path / "gone")


def load_spec_text(folder, text):
    path = folder / "x.exp"
    path.write_text(text)
    return load_spec(path)


def test_the_run_folders_interventions_read_are_part_of_the_fingerprint(spec, tmp_path):
    """Resuming after the mean an ablation reads was re-computed would mix two sources."""
    import attrs

    run_spec(spec)  # a finished run folder to read from
    source = tmp_path / "run"
    experiment = load_spec(spec)
    reads = attrs.evolve(experiment, interventions=(ir.Intervention(
        target="resid_out", target_kind="site", layers=ir.IndexSelector(items=(0,)),
        operation=ir.Operation(kind="mean", run=str(source))),))
    before = run_fingerprint(reads, world_size=1)
    assert before["sources"] != run_fingerprint(experiment, world_size=1)["sources"]
    manifest = source / "manifest.json"
    manifest.write_text(manifest.read_text() + "\n")
    assert changed_parts(before, run_fingerprint(reads, world_size=1)) == ["sources"]
    os.utime(source / "results.safetensors", ns=(1, 1))
    assert changed_parts(before, run_fingerprint(reads, world_size=1)) == ["sources"]
