"""ferryman model package."""
