"""How many environments kboot works on at once (`create A B C`, `sync`, `run`).

Installs are network- and disk-bound and the smoke tests CPU-bound: a few at a time, never
more than the machine's cores can keep busy. Here, not in the create machinery, so that
`kboot run` on existing environments does not import it.
"""

from __future__ import annotations

import os


def default_jobs(count: int) -> int:
    return max(1, min(count, 4, (os.cpu_count() or 2) * 2))
