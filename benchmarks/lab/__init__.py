"""What the benchmarks share, kept out of the shipped package."""
