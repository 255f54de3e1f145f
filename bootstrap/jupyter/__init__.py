"""Jupyter kernelspecs for kboot's environments, and kboot's own ledger of the kernels it
registered.
"""
