"""Data: reading (io), conversation formats (formats), tokenisation and packing
(tokenize), recipe → datasets (build). Method-specific readers live beside them
(gsm8k, preference, xtuner)."""
