"""The test bed shared by the tests and the benchmarks: real Redis and Sentinel processes, a real OpenBao server,
and the pinned upstream charts rendered by Helm's own engine."""
