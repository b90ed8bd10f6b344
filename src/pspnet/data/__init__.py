"""Data: class tables, data sets, transforms."""
