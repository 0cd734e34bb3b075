"""Datasets (installed by ``fedml-heterofl data fetch``, loaded without the network), non-IID
partitions with heterogeneity statistics, and HeteroFL's trigger set."""
from fedml_heterofl.data.catalog import DATASETS, fetch, info, load_dataset, verify_installed
from fedml_heterofl.data.dataset import DataError, Dataset, DatasetSpec, data_root

__all__ = ["DATASETS", "DataError", "Dataset", "DatasetSpec", "data_root", "fetch", "info", "load_dataset",
           "verify_installed"]
