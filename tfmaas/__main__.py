import sys

from tfmaas.cli.main import main

sys.exit(main())
