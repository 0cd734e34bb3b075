"""``python -m fedml_heterofl --cf config.yaml`` (FedML's convention) and every CLI subcommand."""
import sys

from fedml_heterofl.cli import main

sys.exit(main())
