"""BetLink (IMG Arena's bet builder): launch tokens and the operator's Auth endpoint."""
