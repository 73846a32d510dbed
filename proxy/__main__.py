import sys

from proxy.cli.main import main

# Guarded: a spawned process (the re-rank pool, proxy/feed/offload.py) imports this module
# again under another name, and must not run the command line a second time.
if __name__ == "__main__":
    sys.exit(main())
