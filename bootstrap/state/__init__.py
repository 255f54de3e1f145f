"""What kboot remembers on disk about the environments it made: each environment's record and
kboot's private ownership ledger.
"""
