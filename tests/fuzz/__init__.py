"""Coverage-guided fuzzing of the decoders and the reply builder (`make fuzz`); see run.py."""
