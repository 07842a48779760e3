"""The training loop over the protocol, its lr schedules and CPU threads."""
