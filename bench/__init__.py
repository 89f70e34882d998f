"""The pipeline benchmark (``make bench`` = ``python -m bench``); see bench/README.md."""
