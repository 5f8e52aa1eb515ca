"""Mailhaven: a complete email system (SMTP, IMAP, POP3, JMAP, webmail) in one package."""

__version__ = "0.1.0"
