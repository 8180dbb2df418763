"""BidPaw (tap-to-earn auctions): the signed open-session proxy and a local sandbox."""
