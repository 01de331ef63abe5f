"""Text shared by the tasks: subword and character tokenizers (`tokenizers`) and the words a model was trained
on (`known_words`)."""
