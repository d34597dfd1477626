"""ABI definitions, one module per ABI, each constant with the header it comes from.

Plugins import these; the core never does.
"""
