"""Tests of the local cloud (ec2backup.sandbox)."""
