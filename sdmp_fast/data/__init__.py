"""Image data: folders, the embedded data sets, splits, the sharding rule, decoding and the evaluation view, and
the generator of synthetic image folders for tests and benchmarks."""
