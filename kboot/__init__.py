"""`python -m kboot`: the same CLI as the `kboot` command (the code lives in `bootstrap`)."""
