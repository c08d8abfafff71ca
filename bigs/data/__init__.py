"""Data stages: fetch / process / shard / samples / inspect, and the one hdf5 shard format."""
