"""Packaging for fedml_heterofl (Lu, Hu et al., IEEE TIFS 2024) as a FedML 0.9.6 extension."""
from setuptools import find_packages, setup

setup(
    name="fedml_heterofl",
    version="0.1.0",
    description=(
        "HeteroFL poisoning defense (Lu, Hu et al., TIFS 2024), its attacks and baselines, "
        "as a FedML 0.9.6 extension"
    ),
    packages=find_packages(include=["fedml_heterofl", "fedml_heterofl.*"]),
    python_requires=">=3.9,<3.12",
    install_requires=[
        "fedml==0.9.6",
        # torch/torchvision are pinned through constraints.txt, not here: a pin in
        # install_requires would make pip replace a working local build.
        "torch>=2.0",
        "torchvision>=0.15",
        "numpy<2",
        # FedML 0.9.6 imports wandb 0.13.2, whose wandb/util.py calls sentry_sdk.Hub (gone in sentry-sdk 3):
        # without this cap `import fedml` fails on a fresh install.
        "sentry-sdk<3",
        # FedML pulls chardet unpinned; requests 2.31 (FedML's pin) supports chardet < 6 and warns on import
        # (RequestsDependencyWarning) with anything newer.
        "chardet<6",
        "scikit-learn>=1.2",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    extras_require={
        # byzfl: tests/test_byzfl_crosscheck.py checks our rules and attacks against ByzFL's (skipped
        # without it); it pulls seaborn, nothing else new (torch/numpy as pinned)
        "test": ["pytest>=7", "hypothesis>=6", "byzfl==0.0.11"],
        "mpi": ["mpi4py>=3.1"],
        "plot": ["matplotlib>=3.6"],
        "mutation": ["mutmut>=3.3"],
    },
    entry_points={
        "console_scripts": ["fedml-heterofl=fedml_heterofl.cli:main"],
        # defense_type: fedml:<name> -> FedML 0.9.6's own defenses, registered when this module is imported
        # (on the first lookup of such a name; it imports FedML)
        "fedml_heterofl.defense_families": ["fedml = fedml_heterofl.fedml_bridge.fedml_defenses"],
    },
)
