"""`python -m tctseg` (and `torchrun -m tctseg`) runs the command-line interface."""

from tctseg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
