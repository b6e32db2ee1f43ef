import sys

from paygress.cli import main

sys.exit(main())
