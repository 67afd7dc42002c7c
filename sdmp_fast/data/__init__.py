"""Image data: folders, the embedded data sets, splits, the sharding rule and the evaluation view."""
