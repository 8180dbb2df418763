"""The casino's wallet, as the service reaches it: the wallet protocol (docs/wallet-protocol.md)."""
