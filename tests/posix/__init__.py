"""POSIX conformance of a draft: pjdfstest, vendored, against an expectation file."""
