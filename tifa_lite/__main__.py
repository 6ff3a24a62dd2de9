import sys

from tifa_lite.cli import main

sys.exit(main())
