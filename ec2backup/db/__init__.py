"""The database: tables, opening and migrating it, the event log of each run, and leases."""
