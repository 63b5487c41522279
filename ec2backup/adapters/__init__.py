"""Adapters behind the ports: EC2 with boto3, SSH with asyncssh, rsync, keys and host keys.
Each is imported only by the commands that need it (CLI start-up)."""
