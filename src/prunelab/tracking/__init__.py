"""MLflow: runs mirroring DVC's params and metrics, and the store they live in."""
