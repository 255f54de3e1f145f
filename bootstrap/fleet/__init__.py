"""Many environments at once: batch creates and manifests (sync), and the lock targets of a
manifest.
"""
