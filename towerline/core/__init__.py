"""The ground floor of towerline: what streams/, batch/, serving/ and monitoring/ share.

It imports none of them (nor the CLI, demo or dev broker above them), so each pipeline can
depend on it without depending on another. Its modules: ``errors`` (the one error root),
``contracts`` (names every part agrees on), ``files`` (atomic, fsynced writes), ``names``
(names that become paths), ``ann`` (the HNSW index and its store), ``featurestore`` (Feast
access) and ``kafka`` (client settings). Nothing here reads the environment.
"""
