"""A stand-in for the outside world: J&T Express, Pos Indonesia and the WhatsApp Cloud API.

Run it with ``python -m sandbox``; see README.md beside this file.
"""
