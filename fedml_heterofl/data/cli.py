"""``fedml-heterofl data fetch NAME [--root DIR]`` and ``fedml-heterofl data info [--root DIR]``.

Progress goes to :mod:`logging`; only the result (one line, or the table) is printed. Exit status:
0 on success, 1 when a dataset cannot be installed (the reason on stderr)."""
from __future__ import annotations

import argparse
import sys

from fedml_heterofl.data.catalog import DATASETS, fetch, info
from fedml_heterofl.data.dataset import DataError, data_root

ROOT_HELP = "data root (default: $FEDML_HETEROFL_DATA, else ~/.cache/fedml_heterofl)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    f = sub.add_parser("fetch", help="install a dataset into the data root and verify it")
    f.add_argument("name", choices=tuple(DATASETS))
    f.add_argument("--root", default=None, help=ROOT_HELP)
    i = sub.add_parser("info", help="which datasets are installed and verified")
    i.add_argument("--root", default=None, help=ROOT_HELP)


def format_table(rows) -> str:
    head = ("dataset", "present", "verified", "train", "test", "classes", "path", "detail")
    table = [head] + [(r["name"], "yes" if r["present"] else "no", "yes" if r["verified"] else "no",
                       str(r["train"]), str(r["test"]), str(r["classes"]), r["path"], r["detail"])
                      for r in rows]
    widths = [max(len(row[j]) for row in table) for j in range(len(head) - 1)]
    right = {3, 4, 5}
    lines = []
    for row in table:
        cells = [row[j].rjust(widths[j]) if j in right else row[j].ljust(widths[j]) for j in range(len(widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.action == "fetch":
        try:
            path = fetch(args.name, args.root)
        except DataError as exc:
            print(f"fedml-heterofl data fetch {args.name}: {exc}", file=sys.stderr)
            return 1
        print(f"{args.name}: installed and verified in {path}")
        return 0
    print(f"data root: {data_root(args.root)}")
    print(format_table(info(args.root)))
    return 0
