"""The embedded Binance-compatible exchange: matching engine, market generators, server."""
