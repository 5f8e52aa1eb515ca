"""Certificates from an ACME CA (RFC 8555): issuance, challenges, renewal, the swap."""
