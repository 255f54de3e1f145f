"""An environment folder's life: what a name and a request mean, what differs, every change to
the folder (lifecycle), the build stages (venv, install, configure, verify) and
list/check/remove.
"""
