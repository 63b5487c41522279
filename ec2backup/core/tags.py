"""Tag keys that mark what ec2backup owns (reap relies on them alone), and EC2's instance states
in which an instance may still bill or hold a volume."""

from __future__ import annotations

# Tag keys that mark what ec2backup owns. Reap relies on them alone.
TAG_MANAGED = "ec2backup:managed"
TAG_RUN_ID = "ec2backup:run-id"
TAG_PROFILE = "ec2backup:profile"
TAG_KIND = "ec2backup:kind"
TAG_EXPIRES_AT = "ec2backup:expires-at"
# The backup volume is tagged role=data: an instance's root volume carries the run's tags too.
TAG_ROLE = "ec2backup:role"

# EC2 instance states in which an instance may still bill or hold the volume.
LIVE_INSTANCE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
