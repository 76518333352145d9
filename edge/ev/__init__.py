"""The simulated car (testbench runs and our own end-to-end tests)."""
