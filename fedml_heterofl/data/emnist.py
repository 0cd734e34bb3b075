"""EMNIST (28x28 grey images of handwritten characters; by default the 62-class ``byclass`` split) from
torchvision's raw layout, ``EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte.gz``,
installed by torchvision's download (needs internet). Images load as float32 in [0, 1] of shape
(N, 1, 28, 28), upright.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from fedml_heterofl.data.dataset import Dataset, DatasetSpec, torchvision_fetch
from fedml_heterofl.data.idx import GREY_IMAGE_MODELS, IDX_FILES, idx_dataset

#: default EMNIST split: "byclass" (62 classes: digits, upper and lower case letters), matching the paper's
#: EMNIST CNN with 62 outputs (FedML's CNN_DropOut(only_digits=False)); other splits via ``split=``
EMNIST_SPLIT = "byclass"
#: classes per EMNIST split (torchvision's counts; "letters" labels are 1..26, class 0 unused)
EMNIST_SPLITS = {"byclass": 62, "bymerge": 47, "balanced": 47, "letters": 27, "digits": 10, "mnist": 10}
EMNIST_CLASSES = EMNIST_SPLITS[EMNIST_SPLIT]
EMNIST_FOLDER = "EMNIST/raw"


def fetch_emnist(root: Path, root_arg: Optional[str] = None) -> None:
    """torchvision's download into ``root/EMNIST/raw`` (needs internet)."""
    import torchvision

    manual = ("download gzip.zip (https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip) on a machine with "
              f"internet access and put its emnist-{EMNIST_SPLIT}-*-ubyte.gz files into {root / EMNIST_FOLDER}")
    torchvision_fetch("emnist", lambda: torchvision.datasets.EMNIST(str(root), split=EMNIST_SPLIT, download=True),
                      manual)


def load_emnist(root: Path, root_arg: Optional[str], split: str = EMNIST_SPLIT) -> Dataset:
    """EMNIST from torchvision's raw layout (gzipped IDX files). NIST stores the images transposed
    relative to MNIST; they are transposed back here so that characters are upright."""
    if split not in EMNIST_SPLITS:
        raise ValueError(f"unknown EMNIST split {split!r}; allowed: {', '.join(EMNIST_SPLITS)}")
    files = {k: f"emnist-{split}-{'train' if k.startswith('train') else 'test'}-"
                f"{'images-idx3' if k.endswith('x') else 'labels-idx1'}-ubyte.gz" for k in IDX_FILES}
    return idx_dataset("emnist", root / EMNIST_FOLDER, files, EMNIST_SPLITS[split], root_arg, transpose=True)


EMNIST = DatasetSpec("emnist", EMNIST_FOLDER, EMNIST_CLASSES, GREY_IMAGE_MODELS, fetch_emnist, load_emnist,
                     load_options=("split",))
