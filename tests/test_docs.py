"""The published documents' local links and images point at files that are under version control: a
figure that exists only on the machine that made it (e.g. ignored by ``.gitignore``) is a broken image
on every clone."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

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


def test_results_summary_table_is_the_summary_commands_output(monkeypatch):
    # docs/results.md gives the `fedml-heterofl summary` command its summary table comes from; run on the
    # committed runs/ it must print that table, line for line.
    import shlex

    from fedml_heterofl.experiments.report import parse_summary_rows, summary_table

    text = (ROOT / "docs" / "results.md").read_text()
    block = re.search(r"```\n(fedml-heterofl summary .*?)\n```", text, re.S)
    assert block, "docs/results.md: no ``` block with the fedml-heterofl summary command"
    argv = shlex.split(block.group(1).replace("\\\n", " "))
    monkeypatch.chdir(ROOT)
    table = summary_table(parse_summary_rows(argv[2:]))
    assert table in text, ("docs/results.md's summary table is not what its command prints from runs/ now; "
                           f"paste this in its place:\n{table}")
