"""`python -m lighthead ...`: the same command line as the `lighthead` script."""

from lighthead.pipelines.cli import main

if __name__ == "__main__":
    main()
