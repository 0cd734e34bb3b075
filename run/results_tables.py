"""Remake every quoted table of docs/results.md from the command its marker names.

Each table in docs/results.md is preceded by ``<!-- table: COMMAND -->`` (``tests/test_docs.py`` checks
that the command still prints the table's header and every row the document quotes). When committed runs
are added to a folder — a new attack column, a new seed — a quoted table can stop being printed; this
script runs each marker's command on the committed runs and, for every table the command no longer
prints, puts the printed table most alike (the same first column, most cells equal under the same row
and column; the first printed of equals) in its place, keeping the rows the document
quoted (by their first cell). Tables that still hold, and ``written`` ones, are left as they are. Prose
around the tables is not touched: reread it after a refresh.

    .venv/bin/python run/results_tables.py            # rewrite docs/results.md
    .venv/bin/python run/results_tables.py --check    # exit 1 and list the tables that would change
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import sys
from pathlib import Path
from typing import List

from fedml_heterofl.cli import main as cli_main
from fedml_heterofl.experiments.cells import markdown_tables

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
MARKER = re.compile(r"^<!-- table: (.+) -->$")


def printed_tables(command: str) -> List[List[str]]:
    """The tables ``command`` (``fedml-heterofl ...``) prints, each as its lines."""
    argv = shlex.split(command)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli_main(argv[1:])
    if rc != 0:
        raise SystemExit(f"`{command}` failed with exit status {rc}")
    lines = out.getvalue().splitlines()
    return [lines[start:end] for start, end in markdown_tables(lines)]


def cells(row: str) -> List[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def first_cell(row: str) -> str:
    return cells(row)[0]


def refreshed(quoted: List[str], printed: List[List[str]]) -> List[str]:
    """``quoted`` as it stands when a printed table holds its header and rows; else the printed table
    whose header starts with the same cell, with the rows whose first cell the quote had."""
    if any(t[0] == quoted[0] and set(quoted[2:]) <= set(t[2:]) for t in printed):
        return quoted
    kept = {first_cell(row) for row in quoted[2:]}

    def by_column(table: List[str]) -> set:
        header = cells(table[0])
        return {(first_cell(row), column, value) for row in table[2:] for column, value in zip(header, cells(row))}

    def likeness(table: List[str]) -> int:  # cells equal under the same row label and column name
        return len(by_column(table) & by_column(quoted))

    ranked = sorted((t for t in printed if first_cell(t[0]) == first_cell(quoted[0])), key=likeness, reverse=True)
    if not ranked:  # sorted() is stable: of equally alike tables, the first printed (the command's main one)
        raise SystemExit(f"no printed table starts with {first_cell(quoted[0])!r} as {quoted[0][:70]} does")
    return ranked[0][:2] + [row for row in ranked[0][2:] if first_cell(row) in kept]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table would change")
    args = parser.parse_args()
    lines = DOC.read_text().splitlines()
    changed = []
    for start, end in reversed(markdown_tables(lines)):
        before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(before)
        if marker is None or marker.group(1) == "written":
            continue
        new = refreshed(lines[start:end], printed_tables(marker.group(1)))
        if new != lines[start:end]:
            changed.append(f"line {start + 1}: {marker.group(1)}")
            lines[start:end] = new
    for line in reversed(changed):
        print(("would change " if args.check else "changed ") + line)
    if not args.check and changed:
        DOC.write_text("\n".join(lines) + "\n")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
