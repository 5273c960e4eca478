"""What people see in snapshot mode: pure functions from a Snapshot to text."""
