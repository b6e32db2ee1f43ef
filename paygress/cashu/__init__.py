"""Pure Cashu protocol code: tokens, BDHKE crypto, NUT-13 secrets, NUT-18 requests, mint client.

Modules are imported directly (``from paygress.cashu.token import parse_token``); this
package has no side effects on import.
"""
