"""partner-gateway's benchmark: the service measured against this machine's own ceilings."""
