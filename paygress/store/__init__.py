"""Durable state: the operator's ecash, grants (the redeem cache) and swap bookkeeping."""
