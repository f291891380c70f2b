"""lecture-qa: grounded question answering over lecture material."""
