"""The paper's Table I (Lu, Hu et al., IEEE TIFS 2024, §VII-B): final test accuracy of each baseline and
HeteroFL per dataset and attack, as printed there, for the report's side-by-side drops table
(:func:`fedml_heterofl.experiments.tables.drops_table`); and its Table II (time to a target accuracy
without attack), for the report's time table (:func:`fedml_heterofl.experiments.timing.time_table`).

Keys use our names: the workload labels of the report (``dataset/model``), the defenses of
:mod:`fedml_heterofl.defense` and the attacks of :mod:`fedml_heterofl.attack` (``none`` is the paper's
"without attack"). Fashion-MNIST/CNN, our runnable stand-in for EMNIST/CNN (whose files cannot be
installed here), is compared with the paper's EMNIST row (:data:`PAPER_ROW`).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

#: Table I's attack columns, in its order
ATTACKS: Tuple[str, ...] = ("none", "adaptive", "min_max", "min_sum", "label_flip", "sign_flip")

#: Table I: paper dataset row -> defense -> accuracy per :data:`ATTACKS` column
TABLE_I: Mapping[str, Mapping[str, Tuple[float, ...]]] = {
    "CIFAR-10 (ResNet20)": {
        "multikrum": (0.7323, 0.5331, 0.6125, 0.5789, 0.7093, 0.7017),
        "median": (0.6864, 0.5070, 0.5466, 0.5017, 0.6521, 0.6506),
        "zeno": (0.7322, 0.5163, 0.6872, 0.6309, 0.7299, 0.7119),
        "fltrust": (0.5847, 0.1642, 0.6073, 0.5907, 0.5618, 0.5912),
        "dnc": (0.7306, 0.1111, 0.2318, 0.2240, 0.7164, 0.7109),
        "heterofl": (0.7239, 0.7123, 0.7201, 0.7133, 0.7180, 0.7120),
    },
    "EMNIST (CNN)": {
        "multikrum": (0.8021, 0.0513, 0.0557, 0.0519, 0.6983, 0.7871),
        "median": (0.7216, 0.5345, 0.6021, 0.5802, 0.6490, 0.6914),
        "zeno": (0.8014, 0.0557, 0.0557, 0.0557, 0.7910, 0.7952),
        "fltrust": (0.7986, 0.0513, 0.0513, 0.0513, 0.7909, 0.7812),
        "dnc": (0.8031, 0.0524, 0.0524, 0.0524, 0.7899, 0.0031),
        "heterofl": (0.8024, 0.7914, 0.8001, 0.7928, 0.7908, 0.7965),
    },
    "MNIST (LR)": {
        "multikrum": (0.8201, 0.2215, 0.4501, 0.4769, 0.6851, 0.8200),
        "median": (0.8007, 0.7106, 0.7328, 0.7521, 0.4982, 0.7296),
        "zeno": (0.8211, 0.6052, 0.6344, 0.6590, 0.7570, 0.8193),
        "fltrust": (0.8203, 0.8109, 0.8105, 0.8183, 0.8145, 0.8192),
        "dnc": (0.8210, 0.7823, 0.7967, 0.7934, 0.5957, 0.0221),
        "heterofl": (0.8216, 0.8110, 0.8169, 0.8132, 0.8143, 0.8200),
    },
    "Shakespeare (RNN)": {
        "multikrum": (0.5234, 0.2345, 0.2175, 0.2009, 0.5019, 0.5187),
        "median": (0.5124, 0.4931, 0.4899, 0.4787, 0.5144, 0.4897),
        "zeno": (0.5235, 0.2115, 0.1705, 0.2516, 0.5231, 0.5199),
        "fltrust": (0.5214, 0.5108, 0.5191, 0.5162, 0.4690, 0.4365),
        "dnc": (0.5229, 0.5118, 0.5156, 0.5177, 0.5186, 0.5011),
        "heterofl": (0.5218, 0.5128, 0.5114, 0.5186, 0.5151, 0.5200),
    },
}

#: our workload label -> the Table I row it is compared with
PAPER_ROW: Mapping[str, str] = {
    "cifar10/resnet20": "CIFAR-10 (ResNet20)",
    "emnist/cnn": "EMNIST (CNN)",
    "fashion_mnist/cnn": "EMNIST (CNN)",
    "mnist/lr": "MNIST (LR)",
    "shakespeare/rnn": "Shakespeare (RNN)",
}


#: Table II (time-to-accuracy without attack, in hours, to a target accuracy): paper dataset column ->
#: (target accuracy, {defense: hours}). The table's header gives the four datasets' targets in order as
#: "TA (80%)", "(70%)", "TA (50%)", "(70%)": MNIST 80 %, CIFAR-10 70 %, Shakespeare 50 %, FEMNIST 70 %
#: (each below that dataset's clean FedAvg accuracy in Table I: 0.82, 0.72, 0.52, 0.80).
TABLE_II: Mapping[str, Tuple[float, Mapping[str, float]]] = {
    "MNIST (LR)": (0.80, {"fedavg": 0.0883, "heterofl": 0.1869, "median": 0.1422, "zeno": 0.1683,
                          "fltrust": 0.2011, "dnc": 0.2378, "multikrum": 0.2422}),
    "CIFAR-10 (ResNet20)": (0.70, {"fedavg": 55.0419, "heterofl": 71.1811, "median": 58.6653, "zeno": 68.8683,
                                   "fltrust": 98.2744, "dnc": 75.4025, "multikrum": 71.8450}),
    "Shakespeare (RNN)": (0.50, {"fedavg": 7.6178, "heterofl": 17.8122, "median": 17.1472, "zeno": 17.5297,
                                 "fltrust": 19.7017, "dnc": 19.2150, "multikrum": 18.0239}),
    "FEMNIST (CNN)": (0.70, {"fedavg": 0.3353, "heterofl": 0.8872, "median": 0.6100, "zeno": 0.6714,
                             "fltrust": 0.9719, "dnc": 0.9369, "multikrum": 0.9044}),
}

#: our workload label -> the Table II column it is compared with (Table II has FEMNIST where Table I has
#: EMNIST; Fashion-MNIST/CNN stands in for both)
TIME_COLUMN: Mapping[str, str] = {
    "cifar10/resnet20": "CIFAR-10 (ResNet20)",
    "emnist/cnn": "FEMNIST (CNN)",
    "fashion_mnist/cnn": "FEMNIST (CNN)",
    "mnist/lr": "MNIST (LR)",
    "shakespeare/rnn": "Shakespeare (RNN)",
}


def paper_time(workload: str) -> Tuple[Optional[float], Dict[str, float]]:
    """``(target accuracy, {defense: hours})`` of the Table II column ``workload`` is compared with;
    ``(None, {})`` when the paper has none."""
    target, hours = TABLE_II.get(TIME_COLUMN.get(workload, ""), (None, {}))
    return target, dict(hours)


def paper_accuracy(workload: str) -> Dict[str, Dict[str, float]]:
    """``{defense: {attack: accuracy}}`` of the Table I row ``workload`` is compared with; ``{}`` when
    the paper has none."""
    row = TABLE_I.get(PAPER_ROW.get(workload, ""), {})
    return {defense: dict(zip(ATTACKS, accs)) for defense, accs in row.items()}
