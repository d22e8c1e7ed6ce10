"""The ``onevision demo`` package: synthetic data, the two-variant curriculum run and its report."""
