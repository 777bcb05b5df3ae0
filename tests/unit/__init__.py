"""Unit tests: one layer at a time, against fakes (MockTransport, MemoryBlobStore, fake clocks)."""
