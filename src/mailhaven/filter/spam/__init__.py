"""The built-in spam filter: one score per inbound message and the action it calls for.

``scoring.SpamChecker`` adds up the tests: GTUBE (``gtube.py``), the SPF/DKIM/DMARC
verdicts, DNSBL/DNSWL listings of the client address (``dnsbl.py``), reverse DNS and HELO
(``rdns.py``), the per-account and global naive Bayes classifiers (``tokens.py``,
``bayes.py``, counts in the store) and the account's allow and block lists. Training
(``train.py``) happens when a user moves mail into or out of Junk.
"""
