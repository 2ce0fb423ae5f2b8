"""Shipped `evaluate` module; load it with `bortify.metrics.load_metric` or `evaluate.load(<this dir>)`."""
