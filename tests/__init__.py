"""The test suite, a folder per room of the house (docs/layout.md)."""
