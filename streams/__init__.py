"""Kafka streams: real-time user sequences and decayed pin engagement, exactly-once in effect.

Pure handlers: ``sequence`` (user_realtime_seq), ``decay`` (pin_engagement), ``update``
(one batch's changes), ``events`` (decoding, key and event-time checks), ``resets`` (a
topic shorter than its applied offsets). Edges: ``worker`` (the consumer loop),
``connect`` (its Kafka clients), ``committer``, ``state`` with ``store_redis`` /
``store_sqlite`` (state, Feast rows and applied offsets in one transaction),
``feast_layout``, ``deadletter``, ``metrics``; ``runner`` runs a worker in a thread or in
the foreground.
"""
