"""The ``onevision_demo`` (generation) and ``onevision_demo_mc`` (multiple choice) lmms-eval task groups."""
