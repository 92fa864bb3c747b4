"""`python -m groundqa`: the command line."""

from groundqa.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
