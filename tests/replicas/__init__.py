"""Local replicas of the remote services, shared by the tests, the benchmarks and `make demo` (no ../shared needed)."""
