"""`python -m streamd` is the same as the `streamd` console script."""

from streamd.cli import main

if __name__ == "__main__":
    main()
