"""Tests of the mount's S3 layer against a real SeaweedFS (started once per session)."""
