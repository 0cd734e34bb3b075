"""fedml_heterofl: the HeteroFL poisoning defense of Lu, Hu et al. (IEEE TIFS 2024) for FedML 0.9.6.

Not Diao et al.'s HeteroFL (ICLR 2021, heterogeneous model widths).
"""
__version__ = "0.1.0"
