"""edge.pki: Plug & Charge PKI: test PKI tool, certificate store, contract chain validation, CLI."""
