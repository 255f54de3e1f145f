from __future__ import annotations

from bootstrap.cli.app import main

if __name__ == "__main__":
    main()
