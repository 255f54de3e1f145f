"""Putting Python packages into a folder: interpreters, the virtualenv itself, the two
installers (uv and pip) and the accelerator (CPU/CUDA) choice.
"""
