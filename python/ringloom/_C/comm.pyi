"""
Rendezvous store, process groups and collectives
"""
from __future__ import annotations
__all__: list[str] = list()
