import sys

from clicktrail.cli import main

sys.exit(main())
