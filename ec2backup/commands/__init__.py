"""What each command does: checks input, creates and drives runs, reads the history."""
