"""ISO 15118-3 SLAC (not implemented yet: see issue 3)."""
