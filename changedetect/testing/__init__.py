"""Test beds built in code: synthetic scenes with known truth, shared by tests, demo and benchmarks."""
