"""Small plugin stages (`kind: toy_stages.counter`) that exercise the runner: caching, resume, signals."""
