"""Ketanmu's shared code: the event contract and the plumbing every service uses.

Nothing here knows about one service's business; services never import each other.
"""
