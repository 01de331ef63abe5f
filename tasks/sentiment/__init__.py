"""Sentiment classification with attention pooling: the fourth task, built from the ``core`` skeleton only."""
