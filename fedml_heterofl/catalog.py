"""``fedml-heterofl defenses`` / ``fedml-heterofl attacks``: the rules and attacks a config can name.

``defenses`` lists ours (:data:`fedml_heterofl.defense.REGISTRY`) and FedML 0.9.6's own as
``fedml:<name>`` (:mod:`fedml_heterofl.fedml_bridge.fedml_defenses`, which imports FedML: a few seconds;
``--no-fedml`` skips them), each with its parameters and, for FedML's, what FedML itself breaks.
"""
from __future__ import annotations

import argparse
from typing import List

from fedml_heterofl import components


def _first_line(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def defense_lines(with_fedml: bool = True) -> List[str]:
    """One line per defense: ``name  parameters  summary`` (ours, then FedML's)."""
    from fedml_heterofl.defense import REGISTRY

    lines = ["# ours (defense_type: NAME)"]
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        params = ", ".join(components.accepted_parameters(cls)) or "-"
        lines.append(f"{name:<22} params: {params:<40} {_first_line(cls)}")
    if with_fedml:
        from fedml_heterofl.fedml_bridge import fedml_defenses as fd

        lines.append("# FedML 0.9.6's own (defense_type: fedml:NAME), run by FedML's FedMLDefender")
        for name, cls in fd.register_fedml_defenses().items():
            kind = name[len(fd.PREFIX):]
            note = ("BROKEN: " + fd.BROKEN[kind] if kind in fd.BROKEN else "no-op: " + fd.NO_OP[kind]
                    if kind in fd.NO_OP else "wrong: " + fd.WRONG[kind] if kind in fd.WRONG else "")
            params = ", ".join(fd.FEDML_DEFENSES[kind]) or "-"
            lines.append(f"{name:<22} params: {params:<40} {note}")
    return lines


def attack_lines() -> List[str]:
    """One line per attack: ``name  parameters  summary``."""
    from fedml_heterofl.attack import REGISTRY

    return [f"{name:<12} params: {', '.join(components.accepted_parameters(REGISTRY[name])) or '-':<50} "
            f"{_first_line(REGISTRY[name])}" for name in sorted(REGISTRY)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-fedml", action="store_true", help="list only our own rules (no FedML import)")


def main(args: argparse.Namespace) -> int:
    print("\n".join(defense_lines(not args.no_fedml)))
    return 0


def add_attacks_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main_attacks(args: argparse.Namespace) -> int:
    print("\n".join(attack_lines()))
    return 0
