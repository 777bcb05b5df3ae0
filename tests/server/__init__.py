"""Tests of the local data store: contract over real HTTP, credential scoping on real SeaweedFS."""
