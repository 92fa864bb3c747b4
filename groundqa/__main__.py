"""`python -m groundqa`: the command line."""

from groundqa.service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
