import sys

from omnisource.cli import main

sys.exit(main())
