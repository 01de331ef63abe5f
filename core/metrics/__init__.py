"""Scores: corpus text metrics through sacrebleu (`text`) and alignment scores of attention against gold
alignments (`alignment`)."""
