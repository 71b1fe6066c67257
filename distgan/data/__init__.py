"""Data: shard writing (shards.py), converters (sources/), the resumable stream (stream.py)."""
