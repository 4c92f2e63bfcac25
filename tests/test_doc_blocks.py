"""Every code block in README.md and docs/*.md runs as written (issue 16: the README's Python
snippet failed exactly as printed, and nothing noticed).

Each fenced block names its kind in its info string, and the test does what the kind says:

- `exp`: a spec file, checked as `expc check --no-model` checks it (no error);
- `sh`: each command line (comments stripped) is run by bash, in order, in the doc's
  workspace: a temporary folder with a copy of the repository's `examples/` (runs write
  there) and links to `.venv`, `scripts/` and `.cache/`; `expc` is on PATH; a `make` line
  is dry-run in the repository (`make -n`: the target exists and expands; the suite cannot
  run itself);
- `console`: the `$ ` lines are run as `sh` lines, and each printed line must appear in
  their output, numbers allowed to differ;
- `python`: run as a script in the workspace;
- `yaml`: parsed; with `doc-test: expc-lines` its `expc` lines run in the workspace made a
  git repository of the examples (they read `git ls-files`, as in a user's repository), with `doc-test: pre-commit` its hook ids must be the repository's;
- `text`, `json`, `jsonc`: not code (folder trees, file formats, printed output, templates).

An HTML comment on the line before a block, `<!-- doc-test: WORDS -->`, says what the block
needs: `needs minilm` (run only when the trained MiniLM is fetched, else a visible skip),
`fragment` (`exp` statements, checked inside a minimal experiment with a Hydra split
unless they hold the `hydra` block), `needs base.exp` (an
`exp` block that includes it: a minimal `experiment base` is written beside it). A block
without a kind, an unknown kind or an indented code block fails the test, so nothing is
skipped silently. Blocks of one doc run in order in one workspace, so a block may use what
an earlier one wrote.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import yaml

from expc.spec import check_file

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))
MINILM = REPO / ".cache/models/all-MiniLM-L6-v2"
NOT_CODE = ("text", "json", "jsonc")
KINDS = ("exp", "sh", "console", "python", "yaml", *NOT_CODE)
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->")
NUMBER = re.compile(r"\d[\d.,]*(?:e[+-]?\d+)?")
BASE_EXP = """experiment base {
    model = "builtin:tiny-llama"
    data { source = jsonl("examples/data/prompts.jsonl", field = "text")  batch_size = 4 }
}
"""
FRAGMENT = """experiment fragment {{
    model = "builtin:tiny-llama"
    data {{ source = jsonl("examples/data/prompts.jsonl", field = "text")  batch_size = 4 }}
{hydra}{body}
}}
"""
FRAGMENT_HYDRA = "    hydra { trunk = 2  heads = 3 }\n"


@attrs.frozen(kw_only=True)
class Block:
    """One fenced code block: where it is, its kind, its text and its `doc-test` marker."""

    doc: str
    line: int
    kind: str
    text: str
    marker: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(doc: str) -> list[Block]:
    """The fenced blocks of `doc`, in order."""
    lines = (REPO / doc).read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if opened is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = MARKER.search(lines[i - 1]) if i else None
        found.append(Block(doc=doc, line=i + 1, kind=opened.group(1),
                           text="\n".join(lines[i + 1:end]) + "\n",
                           marker=marker.group(1) if marker else ""))
        i = end + 1
    return found


def indented_blocks(doc: str) -> list[int]:
    """Lines opening an indented code block (after a blank line, outside fences and lists)."""
    lines, fenced, opened, paragraph = (REPO / doc).read_text(encoding="utf-8").splitlines(), \
        False, [], ""
    for n, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.strip():
            continue
        if (line.startswith("    ") and not lines[n - 1].strip()
                and not re.match(r"\s*([-*]|\d+\.)\s", paragraph)):
            opened.append(n + 1)
        elif not line.startswith(" "):
            paragraph = line
    return opened


def workspace(tmp: Path) -> Path:
    """A folder where the docs' commands run: examples copied, the rest linked."""
    shutil.copytree(REPO / "examples", tmp / "examples")
    (tmp / ".venv").symlink_to(Path(sys.prefix))
    for name in ("scripts", ".cache", "bench"):
        if (REPO / name).exists():
            (tmp / name).symlink_to(REPO / name)
    return tmp


def shell(command: str, cwd: Path, where: str) -> str:
    """Run one command line with the venv's `expc` on PATH; its output, or a failure."""
    env = {**os.environ, "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{where}: `{command}` exited {done.returncode}:\n{output}"
    return output


def command_lines(text: str) -> list[str]:
    """The block's command lines, comments stripped, `make` dry-run in the repository."""
    return [re.sub(r"^make\b", f"make -n -C {REPO}", line.split(" #")[0].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def check_spec(block: Block, work: Path) -> None:
    text = block.text
    if block.marker == "fragment":
        text = FRAGMENT.format(hydra="" if "hydra {" in text else FRAGMENT_HYDRA,
                               body="\n".join("    " + line for line in text.splitlines()))
    elif block.marker == "needs base.exp":
        (work / "base.exp").write_text(BASE_EXP, encoding="utf-8")
    else:
        assert not block.marker, f"{block.where}: unknown doc-test marker {block.marker!r}"
    spec = work / "doc_block.exp"
    spec.write_text(text, encoding="utf-8")
    cwd = Path.cwd()
    os.chdir(work)  # relative data paths resolve as `expc check` run there would
    try:
        errors = [d for d in check_file(spec, check_model=False) if d.severity == "error"]
    finally:
        os.chdir(cwd)
    assert not errors, f"{block.where}: {[d.message for d in errors]}"


def run_console(block: Block, work: Path) -> None:
    output, printed = "", []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            output += "".join(shell(command, work, block.where)
                              for command in command_lines(line[2:]))
        elif line.strip():
            printed.append(line.strip())
    for line in printed:
        shape = NUMBER.sub(lambda _: "@", re.escape(line)).replace("@", NUMBER.pattern)
        assert re.search(shape, output), f"{block.where}: printed line not in the output: {line}"


def run_yaml(block: Block, work: Path) -> None:
    parsed = yaml.safe_load(block.text)
    if block.marker == "expc-lines":
        if not (work / ".git").exists():
            shell("git init -q && git add examples", work, block.where)
        for line in block.text.splitlines():
            if line.strip().startswith("expc "):
                shell(line.strip(), work, block.where)
    elif block.marker == "pre-commit":
        ours = {hook["id"] for hook in yaml.safe_load(
            (REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))}
        used = {hook["id"] for repo in parsed["repos"] for hook in repo["hooks"]}
        assert used <= ours, f"{block.where}: hooks {used - ours} are not the repository's"
    else:
        pytest.fail(f"{block.where}: a yaml block needs `doc-test: expc-lines` or `pre-commit`")


def run_block(block: Block, work: Path) -> str | None:
    """Run one block; a reason when it cannot run here."""
    if block.marker == "needs minilm" and not (MINILM / "config.json").is_file():
        for spec in re.findall(r"examples/\w+\.exp", block.text):  # as far as it can
            check_spec(attrs.evolve(block, kind="exp", text=(work / spec).read_text(), marker=""),
                       work)
        return f"{block.where} needs the trained MiniLM (scripts/fetch_minilm.py)"
    if block.kind == "exp":
        check_spec(block, work)
    elif block.kind == "sh":
        for line in command_lines(block.text):
            shell(line, work, block.where)
    elif block.kind == "console":
        run_console(block, work)
    elif block.kind == "python":
        script = work / "doc_block.py"
        script.write_text(block.text, encoding="utf-8")
        shell(f"{sys.executable} {script}", work, block.where)
    elif block.kind == "yaml":
        run_yaml(block, work)
    return None


@pytest.mark.parametrize("doc", DOCS)
def test_every_block_names_a_known_kind(doc):
    unknown = [f"{b.where} ({b.kind or 'no kind'})" for b in blocks(doc) if b.kind not in KINDS]
    assert not unknown, f"name each block's kind, one of {KINDS}: {unknown}"
    assert not indented_blocks(doc), f"{doc}: fence these code blocks: {indented_blocks(doc)}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_code_block_runs_as_written(doc, tmp_path):
    work = workspace(tmp_path)
    skipped = [reason for block in blocks(doc) if block.kind not in NOT_CODE
               for reason in [run_block(block, work)] if reason]
    if skipped:
        pytest.skip("; ".join(skipped))


def test_the_docs_stand_alone():
    """No doc points at the team's `shared/contracts.md`, which is not in the repository."""
    naming = [doc for doc in DOCS if re.search(r"contracts(\.md| §)",
                                               (REPO / doc).read_text(encoding="utf-8"),
                                               re.I)]
    assert not naming, f"docs naming a contracts file outside the repository: {naming}"

