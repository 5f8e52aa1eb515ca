"""One listener/connection base for the protocol servers (SMTP, IMAP, POP3, ManageSieve next).

``listener.Listener`` accepts, admits (``admission``), upgrades implicit TLS and runs one
task per connection; ``connection.NetConnection`` is what a protocol adapter reads from,
with the idle, login and transfer-rate deadlines in one place.
"""
