"""Adapters: the contract (`base.Adapter`) and the in-process ones (inline, async, test)."""
