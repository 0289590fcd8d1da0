"""Where the freshness monitor's measures come from: one module per source.

Each module turns what it reads (the run ledger, the lake, the online store, the stream
state, the broker, the index store, the serving hosts) into ``Measure`` objects. The pure
``*_measures`` functions take what was read and the time; the readers beside them do the
I/O and raise ``UnavailableError`` naming the source they could not reach.
"""
