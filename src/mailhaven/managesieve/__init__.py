"""ManageSieve (RFC 5804): a sans-IO protocol core, the session against the store, the asyncio adapter."""
