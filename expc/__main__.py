"""`python -m expc ...` runs the command line (what `torchrun -m expc run` launches)."""

from expc.cli import main

if __name__ == "__main__":
    main()
