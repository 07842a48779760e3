"""A run end to end: its folder, records, identity, figures, summaries and statistics."""
