"""Every ``ssal`` command in the shell blocks of README.md and docs/ runs as written.

``ssal group`` commands run for real; ``ssal train`` runs as written plus ``--dry-run`` (the real runs take hours),
``ssal pipeline`` as a dry run of its config. Commands that cannot run here are listed with the reason: synopses
with placeholders, several machines, the demo and bench (run by their own tests), runs that need a trained run.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from ssal.cli import main

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"\[|<|\b(RUN_DIR|FILE|DIR|NAME|DEV|PATH|CONF\.npy|F)\b")


def _commands() -> list[tuple[str, str]]:
    """(where, command line) of every line of a shell block that runs ``ssal``."""
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S):
            first = text.count("\n", 0, m.start()) + 2
            for i, line in enumerate(m.group(1).replace("\\\n", " \n").splitlines()):
                cmd = line.split(" #")[0].strip()
                if re.search(r"(^|&& |\s)ssal ", cmd) and not cmd.startswith("#"):
                    out.append((f"{doc.name}:{first + i}", cmd))
    return out


def _argv(cmd: str) -> list[str]:
    """The arguments after the ``ssal`` (or ``python -m ssal``) word of a command line."""
    words = shlex.split(cmd.split("&& ")[-1])
    return words[words.index("ssal") + 1 :]


def _skip_reason(cmd: str) -> str | None:
    if re.match(r"^(pip|git|benchmarks/)", cmd):
        return "installs, clones or a shell script, not run in tests"
    if re.match(r"^nice ", cmd):
        return "a timing benchmark on a matrix the text makes first"
    if "ft.yaml" in cmd:
        return "fine-tunes pretrained weights fetched from the network"
    if re.match(r"^(srun|[A-Z_]+=)", cmd):
        return "needs several machines or SLURM"
    if PLACEHOLDER.search(cmd):
        return "a synopsis with placeholders"
    sub = _argv(cmd)[0]
    if sub == "demo":
        return "run by tests/test_cli.py::test_demo_end_to_end"
    if sub == "bench":
        return "a benchmark of minutes; tests/test_bench.py runs it with few steps"
    if sub in ("evaluate", "confusion", "predict", "explain", "attack", "export"):
        return "needs the trained run of the command before it (hours on a GPU)"
    return None


CASES = _commands()


def test_the_docs_have_commands() -> None:
    assert len(CASES) > 20
    assert sum(_skip_reason(c) is None for _, c in CASES) >= 10


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's configs and examples, with ``mydata/``."""
    ws = tmp_path_factory.mktemp("docs") / "repo"
    ws.mkdir()
    for d in ("configs", "examples"):
        shutil.copytree(REPO / d, ws / d)
    cli_md = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    my_yaml = re.search(r"cat > my.yaml <<'EOF'\n(.*?)\nEOF", cli_md, flags=re.S)
    assert my_yaml, "docs/cli.md no longer writes my.yaml"
    (ws / "my.yaml").write_text(my_yaml.group(1) + "\n")

    from conftest import _write_tree as write_tree

    for split in ("train", "val"):  # my.yaml has a k=10 branch: 20 classes
        for c in range(20):
            write_tree(ws / "mydata" / split / f"c{c:02d}", {"": "a"}, n=1)
    return ws


@pytest.mark.parametrize(("where", "cmd"), CASES, ids=[w for w, _ in CASES])
def test_doc_command_runs_as_written(where: str, cmd: str, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = _skip_reason(cmd)
    if reason:
        pytest.skip(reason)
    argv = _argv(cmd)
    monkeypatch.chdir(workspace)
    if argv[0] == "pipeline":  # hours of training: check that its config resolves and builds
        rest = [a for i, a in enumerate(argv[1:]) if a != "--out" and (i == 0 or argv[i] != "--out")]
        rest = ["ssal.groupings=online" if a == "--one-pass" else a for a in rest]
        argv = ["train", *rest, "--dry-run"]
    elif argv[0] == "train" and "--dry-run" not in argv:
        argv = [*argv, "--dry-run"]
    assert main(argv) == 0, f"{where}: {cmd}"
