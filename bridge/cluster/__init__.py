"""What the instances of a deployment share besides events: leases, revocations, cursors."""
