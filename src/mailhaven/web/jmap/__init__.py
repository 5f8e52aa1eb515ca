"""JMAP (RFC 8620 core, RFC 8621 mail, RFC 9425 quotas) over the store.

``registry`` holds the method table, the per-call context and the error type every method
module shares; ``api`` dispatches a Request object; method modules register themselves on
import (``core``, ``mailbox``, ``email``, ``thread``, ``submission``, ...).
"""
