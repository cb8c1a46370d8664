import sys

from purerl.commands.cli import main

sys.exit(main())
