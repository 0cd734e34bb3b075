"""Datasets (installed by ``fedml-heterofl data fetch``, loaded without the network), non-IID
partitions with heterogeneity statistics, and HeteroFL's trigger set."""
from fedml_heterofl.data.sources import (
    DATASETS,
    DataError,
    Dataset,
    data_root,
    fetch,
    info,
    load_dataset,
    verify_installed,
)

__all__ = ["DATASETS", "DataError", "Dataset", "data_root", "fetch", "info", "load_dataset", "verify_installed"]
