import sys

from sppnet.cli import main

sys.exit(main())
