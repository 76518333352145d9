"""ISO 15118-2 sessions."""
