"""include, extends and --set: merging rules and their errors."""

from __future__ import annotations

import pytest

from expc.spec.diagnostics import DiagnosticError
from expc.spec.loader import load
from tests.spec.conftest import spec_with

BASE_FILE = """\
experiment base {
    model = "builtin:tiny-llama"
    seed  = 3
    data {
        source     = jsonl("data.jsonl", field = "text")
        batch_size = 2
        limit      = 10
    }
    capture resid_out[*] { aggregate = full }
    capture attn_out[1]  { aggregate = sum }
    importance l2_norm at mlp.down_proj[*]
    importance l2_norm at mlp.up_proj[*]
}
"""


def test_include_resolves_against_the_including_file(write):
    write(BASE_FILE, "specs/lib/base.exp")
    path = write('include "lib/base.exp"\nexperiment v extends base { seed = 4 }\n', "specs/v.exp")
    exp = load(path)
    assert (exp.name, exp.seed, exp.data.limit) == ("v", 4, 10)
    assert exp.data.source.path == "data.jsonl"  # data paths stay relative to the cwd


def test_extends_merges_blocks_and_replaces_statements(write):
    path = write(BASE_FILE + """
experiment v extends base {
    data { limit = 4 }
    capture resid_out[0] { aggregate = mean(mask = last) }
    importance l2_norm at mlp.down_proj[0]
    capture mlp_out[2]
}
""")
    exp = load(path)
    assert (exp.data.limit, exp.data.batch_size, exp.seed) == (4, 2, 3)
    assert [(c.site, c.layers.text(), c.aggregate.mode) for c in exp.captures] == [
        ("attn_out", "1", "sum"), ("resid_out", "0", "mean"), ("mlp_out", "2", "mean")]
    assert [(i.module, i.layers.text()) for i in exp.importances] == [
        ("mlp.up_proj", "*"), ("mlp.down_proj", "0")]


def test_load_picks_the_last_experiment_or_the_named_one(write):
    path = write(BASE_FILE + "experiment v extends base { seed = 9 }\n")
    assert load(path).name == "v"
    assert load(path, experiment="base").seed == 3


def test_include_cycle_is_an_error_at_the_include(write):
    write('include "b.exp"\n', "a.exp")
    path = write('include "a.exp"\n' + spec_with(""), "b.exp")
    with pytest.raises(DiagnosticError) as info:
        load(path)
    (d,) = info.value.diagnostics
    assert d.code == "include-cycle" and d.span.path.endswith("a.exp") and d.span.line == 1


def test_missing_include(write):
    path = write('include "nope.exp"\n' + spec_with(""))
    with pytest.raises(DiagnosticError) as info:
        load(path)
    assert info.value.diagnostics[0].code == "include"


def test_errors_inside_an_included_file_name_that_file(write):
    write("experiment base {\n    sed = 1\n}\n", "base.exp")
    path = write('include "base.exp"\n' + spec_with("").replace("experiment t {", "experiment t extends base {"))
    with pytest.raises(DiagnosticError) as info:
        load(path)
    (d,) = info.value.diagnostics
    assert (d.span.path, d.span.line, d.code) == ("base.exp", 2, "unknown")


def test_extends_unknown_and_cycles(write):
    path = write(spec_with("").replace("experiment t {", "experiment t extends bse {")
                 + "experiment base { seed = 1 }\n")
    with pytest.raises(DiagnosticError) as info:
        load(path, experiment="t")
    assert info.value.diagnostics[0].help == ("did you mean `base`?",)
    path = write("experiment a extends b { }\nexperiment b extends a { }\n")
    with pytest.raises(DiagnosticError) as info:
        load(path)
    assert info.value.diagnostics[0].code == "extends-cycle"


def test_experiment_defined_twice(write):
    path = write(spec_with("") + spec_with(""))
    with pytest.raises(DiagnosticError) as info:
        load(path)
    assert info.value.diagnostics[0].code == "duplicate"


def test_overrides_set_values_with_type_checks(write):
    path = write(BASE_FILE)
    exp = load(path, overrides=["data.limit=8", "seed=11", "output.dir=runs/x y",
                                "capture.resid_out.aggregate=none",
                                "hydra.trunk=1", "hydra.heads=2", "dtype=bfloat16"])
    assert (exp.data.limit, exp.seed, exp.output.dir, exp.dtype) == (8, 11, "runs/x y", "bfloat16")
    assert exp.captures[0].aggregate.mode == "none" and exp.hydra.heads == 2


@pytest.mark.parametrize(("override", "code", "fragment"), [
    ("data.limt=8", "override", "unknown key `data.limt`"),
    ("data.limit=eight", "type", "`limit` must be an integer"),
    ("seed", "override", "is not KEY=VALUE"),
    ("capture.resid_ot.aggregate=none", "override", "no capture named `resid_ot`"),
    ("capture.resid_out.aggregate=avg", "unknown", "unknown aggregation mode `avg`"),
    ("importance.l2_norm.iterations=3", "unknown", "`l2_norm` takes no parameters"),
])
def test_bad_overrides_are_diagnostics_on_the_set_line(write, override, code, fragment):
    path = write(BASE_FILE)
    with pytest.raises(DiagnosticError) as info:
        load(path, overrides=["seed=1", override])
    (d,) = info.value.diagnostics
    assert (d.code, d.span.path, d.span.line) == (code, "--set", 2)
    assert fragment in d.message
