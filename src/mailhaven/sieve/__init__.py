"""A sans-IO Sieve engine (RFC 5228 and extensions): parse and compile a script once, run
the compiled form against a message and get back the actions to take. No I/O here: the
caller delivers, the store keeps the script text."""

from mailhaven.sieve.actions import Action
from mailhaven.sieve.compiler import Script, compile_script
from mailhaven.sieve.errors import SieveError, SieveRuntimeError
from mailhaven.sieve.interpreter import Limits, Outcome, run
from mailhaven.sieve.message import SieveMessage

__all__ = ["Action", "Limits", "Outcome", "Script", "SieveError", "SieveMessage",
           "SieveRuntimeError", "compile_script", "run"]
