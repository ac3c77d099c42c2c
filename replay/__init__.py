"""ferryman replay package."""
