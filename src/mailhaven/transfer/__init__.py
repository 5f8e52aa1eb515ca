"""Moving mail in and out: mbox and Maildir import/export, copying from another IMAP server."""
