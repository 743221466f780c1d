"""``python -m seg <command> [args]``: the ``seg`` console command (seg.commands) without the script."""
import sys

from seg.commands import main

sys.exit(main())
