import sys

from mtpsd.cli import main

sys.exit(main())
