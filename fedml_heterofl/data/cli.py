"""``fedml-heterofl data fetch NAME [--root DIR]`` and ``fedml-heterofl data info [--root DIR]``."""
from __future__ import annotations

import argparse
import sys

from fedml_heterofl.data.sources import DATASETS, DataError, data_root, fetch, info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    f = sub.add_parser("fetch", help="install a dataset into the data root")
    f.add_argument("name", choices=DATASETS)
    f.add_argument("--root", default=None, help="data root (default: $FEDML_HETEROFL_DATA or ~/.cache/fedml_heterofl)")
    i = sub.add_parser("info", help="which datasets are present")
    i.add_argument("--root", default=None)


def main(args: argparse.Namespace) -> int:
    if args.action == "fetch":
        try:
            path = fetch(args.name, args.root)
        except DataError as exc:
            print(f"fedml-heterofl data fetch: {exc}", file=sys.stderr)
            return 1
        print(f"{args.name}: installed and verified in {path}")
        return 0
    print(f"data root: {data_root(args.root)}")
    print(f"{'dataset':<14} {'present':<8} {'classes':>7}  detail")
    for row in info(args.root):
        print(f"{row['name']:<14} {'yes' if row['present'] else 'no':<8} {row['classes']:>7}  {row['detail']}")
    return 0
