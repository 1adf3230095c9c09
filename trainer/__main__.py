"""`python -m tfmaas.trainer …` is `tfmaas train …`."""

import sys

from tfmaas.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
