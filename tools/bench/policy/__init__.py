"""Policy agent benchmark: ``.venv/bin/python -m tools.bench.policy`` (see __main__)."""
