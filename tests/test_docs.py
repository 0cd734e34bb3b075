"""The published documents' local links and images point at files that are under version control: a
figure that exists only on the machine that made it (e.g. ignored by ``.gitignore``) is a broken image
on every clone."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from fedml_heterofl.experiments import cells

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: ``[text](target)`` and ``![alt](target)``, the target up to a space (a title) or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def local_targets(markdown: str) -> list:
    """The local link targets of a markdown text: not URLs, not in-page anchors, anchors and queries cut."""
    targets = []
    for target in LINK.findall(markdown):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        targets.append(unquote(target.split("#")[0].split("?")[0]))
    return targets


def tracked_paths() -> set:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git work tree")
    files = {Path(p) for p in out.decode().split("\0") if p}
    return files | {parent for f in files for parent in f.parents}


def test_link_pattern_finds_links_and_images_and_skips_urls():
    text = ('see [the design](docs/x.md#part), ![fig](figures/a%20b.png "title"), [web](https://e.org/y.png), '
            '[here](#anchor), [mail](mailto:a@b.c) and <https://plain.org>')
    assert local_targets(text) == ["docs/x.md", "figures/a b.png"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_and_image_is_a_tracked_file(document):
    tracked = tracked_paths()
    text = document.read_text()
    broken = []
    for target in local_targets(text):
        path = (document.parent / target).resolve()
        try:
            relative = path.relative_to(ROOT)
        except ValueError:
            broken.append(f"{target} (outside the repository)")
            continue
        if relative not in tracked:
            broken.append(target)
    assert not broken, f"{document.relative_to(ROOT)}: links to files git does not track: {broken}"


def test_results_summary_table_is_the_summary_commands_output(monkeypatch, capsys):
    # docs/results.md gives the `fedml-heterofl summary` command its summary table comes from; run on the
    # committed runs/ it must print that table, line for line.
    import shlex

    from fedml_heterofl.cli import main as cli_main

    text = (ROOT / "docs" / "results.md").read_text()
    block = re.search(r"```\n(fedml-heterofl summary .*?)\n```", text, re.S)
    assert block, "docs/results.md: no ``` block with the fedml-heterofl summary command"
    argv = shlex.split(block.group(1).replace("\\\n", " "))
    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    assert cli_main(argv[1:]) == 0, argv
    table = capsys.readouterr().out
    assert table in text, ("docs/results.md's summary table is not what its command prints from runs/ now; "
                           f"paste this in its place:\n{table}")


#: a table's source, on the line before it: ``<!-- table: COMMAND -->`` (the command prints it) or
#: ``<!-- table: written -->`` (a table of words about the tables, allowed only under these headers)
MARKER = re.compile(r"^<!-- table: (.*) -->$")
WRITTEN_HEADERS = {"| the paper's claim | MNIST/LR calibrated | MNIST/LR converged | Fashion-MNIST/CNN | Shakespeare/RNN |",
                   "| | |"}


def markdown_tables(lines: list) -> list:
    """``(header line index, header, rows)`` of every Markdown table in ``lines``."""
    return [(start, lines[start], lines[start + 2:end]) for start, end in cells.markdown_tables(lines)]


def test_markdown_tables_and_their_markers_are_found():
    lines = ["text", "<!-- table: written -->", "", "| a | b |", "|---|---|", "| 1 | 2 |", "", "| c |", "|---|"]
    assert markdown_tables(lines) == [(3, "| a | b |", ["| 1 | 2 |"]), (7, "| c |", [])]
    assert MARKER.match(lines[1]).group(1) == "written"


def test_every_results_table_is_what_its_command_prints(monkeypatch, capsys):
    # Each table of docs/results.md names the command that prints it (a report table may be quoted with
    # some of its rows left out); run on the committed runs/ now, the command must print the table's
    # header and every row it quotes, in one table.
    import shlex

    from fedml_heterofl.cli import main as cli_main

    monkeypatch.chdir(ROOT)
    lines = (ROOT / "docs" / "results.md").read_text().splitlines()
    problems, quoted = [], []
    for index, header, rows in markdown_tables(lines):
        before = next((lines[k] for k in range(index - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(before)
        if not marker:
            problems.append(f"line {index + 1}: no <!-- table: COMMAND --> line before {header[:60]}")
        elif marker.group(1) == "written":
            if header not in WRITTEN_HEADERS:
                problems.append(f"line {index + 1}: a written table that is not one of {sorted(WRITTEN_HEADERS)}")
        else:
            quoted.append((index, marker.group(1), header, rows))
    # one run per folder: a report folder's --print tables are printed by one command
    commands: dict = {}
    for _, command, _, _ in quoted:
        argv = shlex.split(command)
        assert argv[0] == "fedml-heterofl", command
        key = tuple(a for a in argv[1:] if a != "--print" and not a.startswith("table_"))
        commands.setdefault(key, []).extend(a for a in argv[1:] if a.startswith("table_"))
    printed: dict = {}
    for key, names in commands.items():
        argv = [*key, *(arg for name in dict.fromkeys(names) for arg in ("--print", name))]
        assert cli_main(argv) == 0, argv
        printed[key] = markdown_tables(capsys.readouterr().out.splitlines())
    for index, command, header, rows in quoted:
        key = tuple(a for a in shlex.split(command)[1:] if a != "--print" and not a.startswith("table_"))
        if not any(h == header and set(rows) <= set(out) for _, h, out in printed[key]):
            problems.append(f"line {index + 1}: `{command}` no longer prints this table ({header[:60]}...)")
    assert not problems, "\n".join(problems)
