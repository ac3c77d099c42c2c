"""ferryman bench package."""
