import sys

from domtok.cli import main

sys.exit(main())
