"""Inbound trust: SPF, DKIM verification, DMARC and the Authentication-Results header.

Every message that arrives on port 25 from an unauthenticated peer goes through
:class:`~mailhaven.filter.inbound.InboundFilter` at the end of DATA / BDAT LAST; the
verdict decides whether it is refused (DMARC ``p=reject``), filed in Junk
(``p=quarantine``) or delivered, and what the Authentication-Results header says.
"""
