"""DIN SPEC 70121 sessions."""
