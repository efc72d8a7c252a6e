"""The scenarios of `scripts/bench`, one module each, on a shared harness."""
