"""`python -m bot` does what `natty run` does."""

import sys

from bot.cli import main

# guarded: the local model worker process imports this module again under another name
if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["run"]))
