"""edge: ISO 15118 charger-side controller (daemon, sessions, OCPP, PKI, CLI, traces)."""
