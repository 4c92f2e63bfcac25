"""The docs name the modules that handle things (docs/bad-input.md's table, the architecture
page): every `folder/module.py` (or `folder/module.name`) they name must exist, so a file
moved or renamed cannot leave the docs pointing nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("spec", "models", "compiler", "runtime", "report", "cli")
NAMED = re.compile(r"`((?:%s)/[\w/]+)(?:\.py|\.(\w+))`" % "|".join(FOLDERS))


@pytest.mark.parametrize("doc", ["docs/bad-input.md", "docs/architecture.md", "docs/metrics.md"])
def test_modules_the_docs_name_exist(doc):
    missing = []
    for match in NAMED.finditer((REPO / doc).read_text(encoding="utf-8")):
        path, name = REPO / f"{match.group(1)}.py", match.group(2)
        if not path.exists() and not (REPO / match.group(1)).is_dir():
            missing.append(match.group(0))
        elif name and path.exists() and not re.search(rf"\b(def|class) {name}\b|^{name}\b",
                                                       path.read_text(encoding="utf-8"), re.M):
            missing.append(match.group(0))
    assert not missing, f"{doc} names what does not exist: {missing}"
