"""Browser tests of the operator pages: Playwright driving Debian's chromium against a running connector."""
