"""Entry point of the client and server packages that ``run/fedml_build.sh`` makes with ``fedml build``.

FedML's platform unpacks a package and starts ``python fedml/fedml_entry.py --cf
fedml/config/fedml_config.yaml --rank R --role client|server --run_id ...``. This script runs the
packaged ``fedml_heterofl`` (it sits beside this file, ahead of any installed copy) on the packaged
config: the config's dataset is installed first when the machine lacks it (``fedml-heterofl data
fetch``, checksum-verified), then ``fedml-heterofl run --cf ...`` runs the backend the config names
(``single_process`` or ``MPI``). The platform's own arguments (``--rank``, ``--role``, ``--run_id``,
...) are logged and otherwise not used: FedML's platform transports (MQTT/S3) are not supported.
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fedml_heterofl.cli import main as cli_main  # noqa: E402  (after the path insert, on purpose)
from fedml_heterofl.data import fetch  # noqa: E402
from fedml_heterofl.settings import load_settings  # noqa: E402

log = logging.getLogger("fedml_entry")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cf", "--yaml_config_file", dest="cf", required=True)
    parser.add_argument("--results-dir", default=None)
    args, platform_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("fedml_heterofl from %s", Path(sys.modules["fedml_heterofl"].__file__).parent)
    if platform_args:
        log.info("FedML platform arguments not used: %s", " ".join(platform_args))
    data = load_settings(args.cf).data_args
    fetch(data.dataset, data.data_cache_dir)
    run = ["run", "--cf", args.cf, "--no-progress"]
    return cli_main(run + (["--results-dir", args.results_dir] if args.results_dir else []))


if __name__ == "__main__":
    sys.exit(main())
