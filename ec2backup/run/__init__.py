"""One run: the engine that drives it through its states, and the ``ensure_*`` steps."""
