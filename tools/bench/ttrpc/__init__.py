"""ttrpc benchmark: calls/s and latency of our server, client and proxy against Go ttrpc, in one table."""
