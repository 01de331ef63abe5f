"""The three tasks built on `core`: translation, captioning and speech recognition."""
