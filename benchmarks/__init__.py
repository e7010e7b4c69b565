"""Scripts that print speed, memory and answer-quality figures; they assert nothing."""
