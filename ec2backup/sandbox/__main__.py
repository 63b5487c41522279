"""``python -m ec2backup.sandbox start|stop|status --dir D``."""

from .cli import app

app(prog_name="python -m ec2backup.sandbox")
