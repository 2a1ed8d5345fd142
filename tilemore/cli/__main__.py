import sys

from tilemore.cli import main

sys.exit(main())
