"""What a run records while it runs: its result folder (store) and its per-round metrics (metrics)."""
