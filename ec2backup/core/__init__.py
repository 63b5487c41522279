"""The pure core: run states and their transition table, retention, billing and tags. No I/O;
imports nothing of the project but the ground floor (errors, paths, faults)."""
