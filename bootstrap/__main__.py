"""`python -m bootstrap`: the kboot command (as `python -m kboot`)."""

from __future__ import annotations

from bootstrap.cli.app import main

if __name__ == "__main__":
    main()
