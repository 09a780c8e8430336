"""DAG, fingerprints, runner (cache, resume, signals) and launchers."""
