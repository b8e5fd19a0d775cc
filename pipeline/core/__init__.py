"""The sans-I/O core: protocols and state machines with no sockets, no clock and no event loop.

Time is counted in samples (16 kHz) or passed in as a number, so every piece here can be
tested by feeding inputs and reading outputs.
"""
