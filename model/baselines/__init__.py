"""Baselines that towerline is measured against, under model/protocol.py."""
